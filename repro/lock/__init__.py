"""The lockfile: its format and schema, and comparing, explaining and tracing two locks. No torch."""
