"""Code discovered, not listed: the project files a process imported. No torch.

This is a compiler's dependency file (`gcc -MD`): after a build, every module
the build process imported whose file lies under the project root is source,
whether or not anyone remembered to list it. `code.include` stays for files
that are never imported (other stages' scripts, configs).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from repro.source.filetree import SKIP_DIRS

# Folders under a project root that hold installed code, not the project's own.
_INSTALLED = frozenset({"site-packages", "dist-packages", "__pycache__"})
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def imported_project_files(root: Path, modules: Mapping[str, ModuleType | None] | None = None) -> list[str]:
    """Relative POSIX paths of the files of `modules` (default: this process's) under `root`.

    Left out: repro itself (it is the toolchain's compiler), installed packages
    (a virtual environment inside the project), hidden folders and `.git`/`.dvc`/
    `.repro`, and modules without a file (built-ins, namespace packages).
    Sorted by UTF-8 bytes, the order the lock keeps.
    """
    modules = sys.modules if modules is None else modules
    real_root = Path(root).resolve()
    found: set[str] = set()
    for module in list(modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path:
            continue
        file = Path(path).resolve()
        if real_root not in file.parents or file == _PACKAGE_DIR or _PACKAGE_DIR in file.parents:
            continue
        rel = file.relative_to(real_root)
        folders = rel.parts[:-1]
        if any(p in SKIP_DIRS or p in _INSTALLED or p.startswith(".") for p in folders):
            continue
        if file.is_file():
            found.add(rel.as_posix())
    return sorted(found, key=lambda s: s.encode("utf-8"))
