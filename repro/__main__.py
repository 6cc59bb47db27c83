"""`python -m repro`: the same entry point as the `repro` console script."""

import sys

from repro.cli import main

sys.exit(main())
