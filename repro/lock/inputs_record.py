"""The lock's `inputs` block, hashed from the project: what `repro train` records and verify checks. No torch.

One function for both, so the two cannot drift apart. It lives above the source
layer because a fine-tune's base release brings its own lock, read here by
`lockfile.load`, the one lock reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from repro.filenames import LOCK_NAME
from repro.lock import lockfile
from repro.lock.types import Inputs
from repro.records import BaseLock, JsonObject
from repro.source.base_model import BASE_KEY, base_block, base_path
from repro.source.data import DataSpec
from repro.source.filetree import resolve_under, safe_relpath
from repro.source.hashtree import Progress
from repro.source.inputs import code_block, code_include, config_digest, data_block


def hash_inputs(resolved: JsonObject, root: Path, spec: DataSpec, files: Sequence[str], *,
                imported: list[str] | tuple[str, ...] = (), use_cache: bool = True,
                progress: Progress | None = None) -> Inputs:
    """The lock's `inputs` block (minus the sample order): config, data and code.

    `repro train` and `repro verify` both call this, so what a build recorded and
    what verify checks cannot drift apart. `files` are the data files, globbed once
    by the caller (`data_files`): exactly the list the lock records. `imported` are
    project files the build imported (train adds them after training; verify passes
    the recorded ones). `use_cache=False` re-reads every data byte instead of
    trusting the stat cache.
    """
    inputs: Inputs = {
        "config": config_digest(resolved),
        # Hashed: the files datasets loads plus data.sources (a corpus, a tokenizer).
        "data": data_block(root, spec, list(files), use_cache=use_cache, progress=progress),
        "code": code_block(root, code_include(resolved), imported),
    }
    base = base_path(resolved)
    if base is not None:  # a fine-tune: its base release is source too
        inputs["base"] = base_block(root, base, base_lock(root, base))
    return inputs


def base_lock(root: Path, rel: str) -> BaseLock | None:
    """What the base release's own lock says (its digest and the digests it names), or None without one.

    Read beneath the root and validated like any lock (`lockfile.load`), but not
    trusted: only digests are taken. `repro.source.base_model.require_consistent` is
    the build's check that the weights are the ones that lock describes.
    """
    lock_rel = f"{rel}/{LOCK_NAME}"
    if not resolve_under(root, lock_rel, f"config key {BASE_KEY}").exists():
        return None
    lock, lock_sha = lockfile.load(Path(lock_rel), root=root)
    summary: BaseLock = {
        "path": lock_rel, "sha256": lock_sha, "weights_sha256": lock["outputs"]["weights"]["hashes"]["sha256"],
        "weights_path": f"{rel}/{lock['outputs']['weights']['path']}",
        "config_sha256": lock["inputs"]["config"]["sha256"], "data_root_digest": lock["inputs"]["data"]["root_digest"],
        "version": lock["version"]}
    safe_relpath(summary["weights_path"], f"{lock_rel}: outputs.weights.path")  # LockfileError if it escapes
    return summary
