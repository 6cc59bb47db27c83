"""`python -m repro`: the same entry point as the `repro` console script (never imports from the current folder)."""

import sys

from repro._entry import main

sys.exit(main())
