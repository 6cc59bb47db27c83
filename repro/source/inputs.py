"""Hash a build's inputs: data files, code files and the resolved config. No torch.

These are the model's *source*; the lock records them so a rebuild can say
exactly which input changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from repro import __version__
from repro.canonical import compact_json, sha256_bytes
from repro.errors import ConfigError, DataError, LockfileError
from repro.records import Compiler, ConfigBlock, DataBlock, FilesBlock, GitState, JsonObject
from repro.source.config import hashed_view, require
from repro.source.data import DataFiles, DataSpec, resolve_files
from repro.source.filetree import safe_relpath
from repro.source.hashing import hash_files, root_digest
from repro.source.hashtree import Progress, StatCache
from repro.source.walk import expand_patterns

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def config_digest(resolved: JsonObject) -> ConfigBlock:
    """The hashed part of the config and the sha256 of its compact canonical JSON."""
    view = hashed_view(resolved)
    return {"resolved": view, "sha256": sha256_bytes(compact_json(view))}


def files_block(root: Path, rel_paths: list[str], *, cache: StatCache | None = None, rehash: bool = False,
                algorithms: tuple[str, ...] = ("sha256",), progress: Progress | None = None) -> FilesBlock:
    """The lock's `{"files": [...], "root_digest": ...}` for these files (see hashing.hash_files)."""
    digests = hash_files(root, rel_paths, cache=cache, rehash=rehash, algorithms=algorithms, progress=progress)
    return {"files": [d.to_json() for d in digests], "root_digest": root_digest(digests)}


def data_block(root: Path, spec: DataSpec, files: list[str], *, use_cache: bool = True,
               progress: Progress | None = None) -> DataBlock:
    """The lock's `inputs.data` (minus the sample order): every data file, and the preprocess code.

    `use_cache=False` reads every byte (`--rehash`, `repro verify`); the stat
    cache in `<root>/.repro/` is refreshed either way.
    """
    from repro.source.hashcache import open_cache

    with open_cache(root) as cache:
        hashed = files_block(root, files, cache=cache, rehash=not use_cache, algorithms=spec.extra_hashes,
                             progress=progress)
    block: DataBlock = {"files": hashed["files"], "root_digest": hashed["root_digest"]}
    if spec.preprocess is not None:
        from repro.source.preprocess import record

        block["preprocess"] = record(spec.preprocess, root)
    return block


def git_state(root: Path, rel_paths: list[str]) -> GitState | None:
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
    return {"commit": top[1], "dirty": _differs_from_head(root, rel_paths)}


def _differs_from_head(root: Path, rel_paths: list[str]) -> bool:
    """Whether any file's bytes differ from its blob in HEAD (or it is not in HEAD).

    Read from the object store with `ls-tree` and compared with our own blob hash:
    `git status` would run the repository's `core.fsmonitor` command and clean
    filters, which a stranger's `.git/config` chooses (docs/security.md).
    """
    if not rel_paths:
        return False
    try:
        out = subprocess.run(["git", "-C", str(root), "-c", "core.fsmonitor=false", "ls-tree", "-r", "-z", "HEAD",
                              "--", *rel_paths], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return True
    blobs = {}
    for entry in filter(None, out.split(b"\0")):
        meta, _, name = entry.partition(b"\t")
        blobs[os.fsdecode(name)] = meta.split()[2].decode("ascii")
    for rel in rel_paths:
        try:
            data = (root / rel).read_bytes()
        except OSError:
            return True
        if blobs.get(rel) != hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest():
            return True
    return False


def code_include(resolved: JsonObject) -> list[str]:
    """`code.include`: patterns of project files that no build imports (optional, default none)."""
    code = resolved.get("code")
    if code is None:
        return []
    if not isinstance(code, dict):
        raise ConfigError(f"config key code: expected a mapping with an optional 'include' list, got {code!r}")
    include = require(resolved, "code.include", list) if code.get("include") is not None else []
    for pattern in include:
        if not isinstance(pattern, str):
            raise ConfigError(f"config key code.include: expected a list of path patterns, got {pattern!r}")
        safe_relpath(pattern, "config key code.include: pattern")
    return [str(p) for p in include]


def code_files(root: Path, include: list[str], imported: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The project code a lock records: `code.include`'s files plus those the build imported."""
    listed = expand_patterns(root, include) if include else []
    return sorted(set(listed) | set(imported), key=lambda s: s.encode("utf-8"))


def code_block(root: Path, include: list[str], imported: list[str] | tuple[str, ...] = ()) -> FilesBlock:
    """The lock's `inputs.code`: the listed project files and the ones the build imported."""
    return files_block(root, code_files(root, include, imported))


def compiler_block(rel_paths: list[str]) -> Compiler:
    """The toolchain's `repro` entry: its version and the compiler modules that ran, hashed.

    Paths are relative to the folder holding the installed `repro` package; the
    list comes from `repro.environment.toolchain.compiler_files`.
    """
    return {"version": __version__, **files_block(PACKAGE_DIR.parent, rel_paths)}


def data_files(resolved: JsonObject, root: Path, spec: DataSpec) -> DataFiles:
    """The build's data files, globbed once (`resolve_files`) after every pattern is checked for
    escaping the root; a missing file that a stage makes is named with the command that makes it."""
    check_paths(resolved, spec)
    try:
        return resolve_files(root, spec)
    except DataError as exc:
        made = missing_outputs(resolved, root, [*spec.data_files, *spec.sources])
        if not made:
            raise
        path, stage = made[0]
        raise DataError(f"{path}: not here; it is an output of stage {stage}: run `repro run {stage}` (or "
                        f"`dvc repro`) to make it, or `dvc pull` it; `repro verify --from-source` rebuilds it "
                        "from the primary sources") from exc


def missing_outputs(resolved: JsonObject, root: Path, patterns: list[str]) -> list[tuple[str, str]]:
    """(path, stage) for each declared stage output that these patterns cover and that is not under root."""
    from repro.source.stages import covers, stage_specs

    try:
        specs = stage_specs(resolved)
    except ConfigError:
        return []
    return [(out, spec.name) for spec in specs.values() for out in spec.outputs
            if any(covers(p, out) for p in patterns) and not (root / out).exists()]


def check_paths(resolved: JsonObject, spec: DataSpec) -> None:
    """Data patterns and the task's tokenizer path must stay under the root (checked before any read)."""
    for pattern in spec.data_files:
        safe_relpath(pattern, "config key data.data_files: pattern")
    for pattern in spec.sources:
        safe_relpath(pattern, "config key data.sources: pattern")
    task = resolved.get("task")
    if isinstance(task, dict) and task.get("tokenizer") is not None:  # a path the build reads and copies
        tokenizer = task["tokenizer"]
        if not isinstance(tokenizer, str):
            raise LockfileError(f"config key task.tokenizer: expected a relative path, got {tokenizer!r}")
        safe_relpath(tokenizer, "config key task.tokenizer")
