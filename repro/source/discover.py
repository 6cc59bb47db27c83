"""Code discovered, not listed: the project files a process imported. No torch.

This is a compiler's dependency file (`gcc -MD`): after a build, every module
the build process imported whose file lies under the project root is source,
whether or not anyone remembered to list it. `code.include` stays for files
that are never imported (other stages' scripts, configs).
"""

from __future__ import annotations

import os
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
    # Plain strings: a build has imported ~3,000 modules from a few hundred folders, and
    # Path objects and per-file `resolve()` made this ~0.2 s of every build.
    root_prefix = os.path.join(os.path.realpath(root), "")
    package, package_prefix = str(_PACKAGE_DIR), os.path.join(str(_PACKAGE_DIR), "")
    found: set[str] = set()
    real_folders: dict[str, str] = {}
    for module in list(modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path:
            continue
        file = _resolved(path, real_folders)
        if not file.startswith(root_prefix) or file == package or file.startswith(package_prefix):
            continue
        parts = file[len(root_prefix):].split(os.sep)
        if any(p in SKIP_DIRS or p in _INSTALLED or p.startswith(".") for p in parts[:-1]):
            continue
        if os.path.isfile(file):
            found.add("/".join(parts))
    return sorted(found, key=lambda s: s.encode("utf-8"))


def _resolved(path: str, real_folders: dict[str, str]) -> str:
    """`os.path.realpath(path)`, each folder resolved once per call (cached in `real_folders`)."""
    folder, name = os.path.split(os.path.abspath(path))
    real_folder = real_folders.get(folder)
    if real_folder is None:
        real_folder = real_folders[folder] = os.path.realpath(folder)
    real = os.path.join(real_folder, name)
    return os.path.realpath(real) if os.path.islink(real) else real
