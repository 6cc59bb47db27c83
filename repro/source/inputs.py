"""Hash a build's inputs: data files, code files and the resolved config. No torch.

These are the model's *source*; the lock records them so a rebuild can say
exactly which input changed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from repro import __version__
from repro.canonical import compact_json, sha256_bytes
from repro.source.config import hashed_view, require
from repro.source.data import DataSpec, hashed_file_list
from repro.source.hashing import Progress, StatCache, expand_patterns, hash_files, root_digest, safe_relpath

PACKAGE_DIR = Path(__file__).resolve().parent.parent
SOURCE_SUFFIXES = (".py", ".yaml", ".json")


def config_digest(resolved: dict[str, Any]) -> dict[str, Any]:
    """The hashed part of the config and the sha256 of its compact canonical JSON."""
    view = hashed_view(resolved)
    return {"resolved": view, "sha256": sha256_bytes(compact_json(view))}


def files_block(root: Path, rel_paths: list[str], *, cache: StatCache | None = None, rehash: bool = False,
                algorithms: tuple[str, ...] = ("sha256",), progress: Progress | None = None) -> dict[str, Any]:
    """The lock's `{"files": [...], "root_digest": ...}` for these files (see hashing.hash_files)."""
    digests = hash_files(root, rel_paths, cache=cache, rehash=rehash, algorithms=algorithms, progress=progress)
    return {"files": [d.to_json() for d in digests], "root_digest": root_digest(digests)}


def data_block(root: Path, spec: DataSpec, files: list[str], *, use_cache: bool = True,
               progress: Progress | None = None) -> dict[str, Any]:
    """The lock's `inputs.data` (minus the sample order): every data file, and the preprocess code.

    `use_cache=False` reads every byte (`--rehash`, `repro verify`); the stat
    cache in `<root>/.repro/` is refreshed either way.
    """
    from repro.source.hashcache import open_cache

    with open_cache(root) as cache:
        block = files_block(root, files, cache=cache, rehash=not use_cache, algorithms=spec.extra_hashes,
                            progress=progress)
    if spec.preprocess is not None:
        from repro.source.preprocess import record

        block["preprocess"] = record(spec.preprocess, root)
    return block


def repro_source_files() -> list[str]:
    """repro's own source files, relative to the folder that holds the package."""
    base = PACKAGE_DIR.parent
    return sorted(
        (p.relative_to(base).as_posix() for p in PACKAGE_DIR.rglob("*")
         if p.is_file() and p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts),
        key=lambda s: s.encode("utf-8"),
    )


def git_state(root: Path, rel_paths: list[str]) -> dict[str, Any] | None:
    """The commit checked out at `root` and whether the code files differ from it.

    Provenance for run.json, not the lock: a lock committed to git can never name
    the commit that holds it, so a rebuild from that commit would record another
    one and the lock (and dvc.lock, which hashes it) would stop being reproducible.
    The code files themselves are hashed in the lock; that is the source's identity.
    """
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    if len(top) != 2:
        return None
    status = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all", "--", *rel_paths],
        capture_output=True, text=True, check=False,
    ).stdout if rel_paths else ""
    return {"commit": top[1], "dirty": bool(status.strip())}


def code_block(root: Path, include: list[str]) -> dict[str, Any]:
    """Project code (globs under root) plus repro's own source, the 'compiler'."""
    project = expand_patterns(root, include) if include else []
    repro_files = repro_source_files()
    repro_digests = hash_files(PACKAGE_DIR.parent, repro_files)
    return {
        **files_block(root, project),
        "repro": {
            "version": __version__,
            "files": [d.to_json() for d in repro_digests],
            "root_digest": root_digest(repro_digests),
        },
    }


def hash_inputs(resolved: dict[str, Any], root: Path, *, use_cache: bool = True,
                progress: Progress | None = None) -> dict[str, Any]:
    """The lock's `inputs` block (minus the sample order): config, data and code.

    `repro train` and `repro verify` both call this, so what a build recorded and
    what verify checks cannot drift apart. Every pattern is checked for escaping
    the root before anything is read; `use_cache=False` re-reads every data byte
    instead of trusting the stat cache (`--rehash`, verify).
    """
    spec = DataSpec.from_config(resolved)
    include = [str(p) for p in require(resolved, "code.include", list)]
    for key, patterns in (("data.data_files", spec.data_files), ("data.sources", spec.sources),
                          ("code.include", include)):
        for pattern in patterns:
            safe_relpath(pattern, f"config key {key}: pattern")
    return {
        "config": config_digest(resolved),
        # Hashed: the files datasets loads plus data.sources (a corpus, a tokenizer).
        "data": data_block(root, spec, hashed_file_list(root, spec), use_cache=use_cache, progress=progress),
        "code": code_block(root, include),
    }
