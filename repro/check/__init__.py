"""`repro check`: build the same project under varied settings and name what moved the bits."""
