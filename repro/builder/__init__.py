"""One build end to end (hash, train, write), its child processes, and verify's rebuild."""
