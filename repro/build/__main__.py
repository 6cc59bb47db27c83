"""`python -m repro.build SPEC`: the child process `repro.build.child` starts (one per rank)."""

import sys

from repro.build.run import rebuild_main

if __name__ == "__main__":
    sys.exit(rebuild_main(sys.argv[1]))
