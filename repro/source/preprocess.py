"""A preprocessing step is code: the lock records which code, then we run it.

`data.preprocess` names a function `fn(dataset, **params) -> dataset` by import
path, plus its params:

    data:
      preprocess:
        _target_: prep.pixels   # prep.py under the project root
        scale: 16

The params are part of the resolved config, already in the lock. The code is
recorded here: the sha256 of the module file when it lives under the project
root, or the name and version of the installed package it comes from. Only the
module holding the function is hashed here; the project modules it imports are
in `inputs.code`, like every project module the build process imports.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from repro.environment.installed import distributions_by_module
from repro.errors import ConfigError, DataError
from repro.records import JsonObject, Preprocess, PreprocessPackage
from repro.safeio import printable
from repro.source.project_import import import_target, project_file

KEY = "data.preprocess._target_"


def record(node: JsonObject, root: Path) -> Preprocess:
    """What the lock stores for the step's code (its params are in the resolved config).

    A module under the project root is hashed as a file; any other is pinned by the
    installed distribution's name and version, read from package metadata. Neither
    imports it: `repro verify --inputs-only` never runs what a lock names.
    """
    from repro.source.hashing import hash_files

    target = str(node["_target_"])
    rel = project_file(target, root)
    if rel is not None:
        return {"target": target, "file": hash_files(Path(os.path.realpath(root)), [rel])[0].to_json()}
    return {"target": target, "package": _package(target)}


def _package(target: str) -> PreprocessPackage:
    """The installed distribution providing `target`'s top-level package, with its version."""
    from importlib import metadata

    top = target.split(".", 1)[0]
    if top in sys.stdlib_module_names:
        return {"name": "python", "version": platform.python_version()}
    names = distributions_by_module().get(top)
    if not names:
        raise ConfigError(f"config key data.preprocess._target_ {printable(repr(target))}: its module is neither "
                          "under the project root nor part of an installed package, so the lock could not pin it")
    name = sorted(names)[0]
    return {"name": name, "version": metadata.version(name)}


def apply(dataset: Any, node: dict[str, Any], root: Path) -> Any:
    """Run the step on a `datasets.Dataset`; the function must return one."""
    import datasets

    target = str(node["_target_"])
    fn = import_target(target, root, KEY)  # a project file through repro's finder, checked by its real path
    params = {k: v for k, v in node.items() if k != "_target_"}
    try:
        out = fn(dataset, **params)
    except Exception as exc:  # the user's code failed: name the step, keep it to one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"data.preprocess {target}: {type(exc).__name__}: {first}") from None
    if not isinstance(out, datasets.Dataset):
        raise DataError(f"data.preprocess {target}: returned {type(out).__name__}; expected a datasets.Dataset")
    return out
