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

import importlib
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from repro.environment.installed import distributions_by_module
from repro.errors import ConfigError, DataError
from repro.records import JsonObject, Preprocess, PreprocessPackage
from repro.safeio import printable


def _split(target: str) -> tuple[str, str]:
    module, _, attr = target.rpartition(".")
    if not module or not attr:
        raise ConfigError(f"config key data.preprocess._target_: {target!r} is not a module.function path")
    return module, attr


@contextmanager
def _importable_from(root: Path, local: bool) -> Iterator[None]:
    """Import a project file through repro's finder (`repro.source.project_import`), never from `sys.path`.

    A build child has it installed already (serving only the lock's files in a rebuild).
    """
    from repro.source.project_import import install, installed_for

    if local and installed_for(root) is None:
        install(root)
    yield


def local_file(target: str, root: Path) -> Path | None:
    """The project file defining `target`'s module, found by path alone: nothing is imported.

    `a.b.fn` is `<root>/a/b.py` or `<root>/a/b/__init__.py`, if that is a regular
    file whose real path stays under the root; else None (an installed module).
    Asking the import system instead would run `a/__init__.py` to find `a.b`.
    """
    module, _ = _split(target)
    parts = module.split(".")
    if not all(p.isidentifier() for p in parts):
        raise ConfigError(f"config key data.preprocess._target_ {printable(repr(target))}: not a module.function path")
    real_root = os.path.realpath(root)
    for candidate in (Path(root, *parts[:-1], parts[-1] + ".py"), Path(root, *parts, "__init__.py")):
        real = os.path.realpath(candidate)
        if os.path.isfile(candidate) and real.startswith(real_root.rstrip(os.sep) + os.sep):
            return Path(real)
    return None


def record(node: JsonObject, root: Path) -> Preprocess:
    """What the lock stores for the step's code (its params are in the resolved config).

    A module under the project root is hashed as a file; any other is pinned by the
    installed distribution's name and version, read from package metadata. Neither
    imports it: `repro verify --inputs-only` never runs what a lock names.
    """
    from repro.source.hashing import hash_files

    target = str(node["_target_"])
    origin = local_file(target, root)
    if origin is not None:
        real_root = os.path.realpath(root)
        rel = Path(os.path.relpath(origin, real_root)).as_posix()
        return {"target": target, "file": hash_files(Path(real_root), [rel])[0].to_json()}
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
    module_name, attr = _split(target)
    expected = local_file(target, root)
    with _importable_from(root, expected is not None):
        module = importlib.import_module(module_name)
    if expected is not None and os.path.realpath(getattr(module, "__file__", "") or "") != str(expected):
        raise ConfigError(f"config key data.preprocess._target_ {target!r}: imported {module.__file__}, "
                          f"but the lock hashed {expected}")
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"config key data.preprocess._target_ {target!r}: {module_name} has no function {attr!r}")
    params = {k: v for k, v in node.items() if k != "_target_"}
    try:
        out = fn(dataset, **params)
    except Exception as exc:  # the user's code failed: name the step, keep it to one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"data.preprocess {target}: {type(exc).__name__}: {first}") from None
    if not isinstance(out, datasets.Dataset):
        raise DataError(f"data.preprocess {target}: returned {type(out).__name__}; expected a datasets.Dataset")
    return out
