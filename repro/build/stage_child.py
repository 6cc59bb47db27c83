"""The stage process: import, hash what was imported, seed, then call. Started by `repro.build.stage`.

The code and toolchain digests are taken after the stage's module is imported
and *before* its function is called, and written to disk at once: a file edited
while the stage runs cannot reach the record, and the next run sees the edit.
"""

from __future__ import annotations

import importlib
import os
import random
import sys
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from repro import __version__
from repro.canonical import atomic_write_json
from repro.errors import ConfigError, ReproError
from repro.source.filetree import expand_patterns, inside
from repro.source.hashing import hash_files, root_digest
from repro.source.inputs import PACKAGE_DIR, files_block, repro_source_files


def main(job_path: str) -> int:
    """Run the job in `job_path`; a user-facing failure goes to its error file as one line."""
    import json

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    root = Path(job["root"])
    try:
        fn, imported = load_target(job["name"], job["target"], root)
        atomic_write_json(Path(job["prestart_path"]), {"code": code_block(root, job["code"]),
                                                       "toolchain": toolchain(imported)})
        seed_everything(int(job["seed"]))
        fn(inputs=[root / p for p in job["inputs"]], outputs=[Path(p) for p in job["outputs"]], **job["params"])
    except ReproError as exc:
        atomic_write_json(Path(job["error_path"]), {"exit_code": exc.exit_code, "message": str(exc)})
        return exc.exit_code
    except Exception as exc:  # the stage's own bug: show it, and fail the run like a failed training
        traceback.print_exc()
        atomic_write_json(Path(job["error_path"]), {
            "exit_code": 4, "message": f"stage {job['name']} failed: {type(exc).__name__}: {exc}"})
        return 4
    return 0


def load_target(name: str, target: str, root: Path) -> tuple[Any, set[str]]:
    """Import `module.function` with the project root first on the path; also return what got imported."""
    sys.path.insert(0, str(root))
    module_name, _, attr = target.rpartition(".")
    before = set(sys.modules)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"config key stages.{name}._target_: cannot import {module_name} "
                          f"from the project root ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"config key stages.{name}._target_: {module_name} has no function {attr}")
    return fn, set(sys.modules) - before


def project_modules(root: Path) -> list[str]:
    """Files of the loaded modules that lie under the project root (not repro's, not a venv's)."""
    real_root, ours = os.path.realpath(root), os.path.realpath(PACKAGE_DIR)
    found = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        real = os.path.realpath(file)
        if inside(real_root, real) and not inside(ours, real) and "site-packages" not in Path(real).parts:
            found.add(Path(real).relative_to(real_root).as_posix())
    return sorted(found)


def code_block(root: Path, patterns: list[str]) -> dict[str, Any]:
    """The stage's code: imported project modules plus `code` patterns, and repro's own source."""
    files = sorted(set(project_modules(root)) | set(expand_patterns(root, patterns) if patterns else []),
                   key=lambda s: s.encode("utf-8"))
    ours = hash_files(PACKAGE_DIR.parent, repro_source_files())
    return {**files_block(root, files), "repro": {"version": __version__, "root_digest": root_digest(ours)}}


def toolchain(imported: set[str]) -> dict[str, Any]:
    """Python's version and the distributions the stage's module brought in."""
    import platform

    dists = metadata.packages_distributions()
    names = {d for m in imported if "." not in m for d in dists.get(m, []) if m != "repro"}
    packages = {"python": platform.python_version()}
    for name in sorted(names):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"packages": packages}


def seed_everything(seed: int) -> None:
    """Seed the generators a stage may use; only libraries it already imported (no torch import here)."""
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
