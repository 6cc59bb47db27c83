"""The `repro` console script and `python -m repro`: nothing is imported from the current folder.

`python -m repro` puts the current folder first on `sys.path` (and an empty
PYTHONPATH entry does the same for the console script), so a `json.py` in a
stranger's project, where a user runs `repro verify`, would run in place of the
standard library's. It is taken off the path before repro imports anything.
(A stage child is started with `python -P`, which never puts it there.)
"""

import os

from repro.syspath import off_path  # imports only os and sys


def main() -> int:
    """Run `repro` (see `repro.cli.main`) with the current folder off the import path."""
    _no_current_folder()
    from repro.cli import main as cli_main

    return cli_main()


def _no_current_folder() -> None:
    try:
        here = os.getcwd()
    except OSError:  # the current folder was deleted: nothing to import from it
        return
    off_path(here)

