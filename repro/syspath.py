"""Taking a folder off the import path: the one place repro does it. Imports only `os` and `sys`.

A folder on `sys.path` lets any `NAME.py` in it stand in for a library (a
stranger's `json.py`). The console script takes the current folder off before
repro imports anything else (`repro._entry`, which is why this module imports
nothing a folder could shadow); the project finder takes the project root off
(`repro.source.project_import`). A stage child is started with `python -P`,
which never puts the root there.
"""

from __future__ import annotations

import os
import sys


def off_path(folder: str | os.PathLike[str]) -> None:
    """Remove every `sys.path` entry whose real path is `folder`'s, `''` (the current folder) included."""
    real = os.path.realpath(folder)
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != real]
