"""One module per `repro` command: `add_arguments(parser)` and `run(args) -> int`."""
