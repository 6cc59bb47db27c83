"""A fine-tune's base model is source: its release folder is hashed like data. No torch.

`model.base` names a release folder under the project root (weights, HF config,
tokenizer, and normally the `repro.lock` that built them). The fine-tune's lock
records `inputs.base`: the digest of every file the model loads from that folder,
the base lock's own digest, and a summary of what the base was built from. A
folder without a lock is accepted and recorded as an unverified base: its
lineage is a claim nobody can check (docs/lockfile.md, "Base model").
"""

from __future__ import annotations

from pathlib import Path

from repro.errors import DataError
from repro.filenames import CHECK_NAME, LOCK_NAME, PROVENANCE_NAME, RECORD_NAME, RUN_NAME
from repro.records import BaseBlock, BaseLock, JsonObject
from repro.source.filetree import resolve_under, safe_relpath
from repro.source.hashing import hash_files, root_digest

BASE_KEY = "model.base"
# What a model loads from a release folder. Not hashed: the lock (recorded on its
# own), run.json (machine facts), and the JSON evidence that commands leave beside a
# release after its build (verify's record, check's report, attest's statement): a
# fine-tune's base must not change because someone verified, checked or attested it.
LOADED_SUFFIXES = (".safetensors", ".json", ".txt", ".model")
NOT_SOURCE = (LOCK_NAME, RUN_NAME, RECORD_NAME, CHECK_NAME, PROVENANCE_NAME)
LOCKED, UNVERIFIED = "locked", "unverified base"


def base_path(resolved: JsonObject) -> str | None:
    """The `model.base` release folder (relative to the root), or None for a model trained from scratch."""
    model = resolved.get("model")
    rel = model.get("base") if isinstance(model, dict) else None
    if rel is None:
        return None
    if not isinstance(rel, str) or not rel.strip("/"):
        raise DataError(f"config key {BASE_KEY}: expected a release folder under the project root, got {rel!r}")
    return safe_relpath(rel.rstrip("/"), f"config key {BASE_KEY}").as_posix()


def release_files(root: Path, rel: str) -> list[str]:
    """The files of the release folder a model loads, relative to the root, sorted."""
    folder = resolve_under(root, rel, f"config key {BASE_KEY}")
    if not folder.is_dir():
        raise DataError(f"{rel}: the base release folder ({BASE_KEY}) does not exist under the project root; "
                        "build or download the base model first")
    names = sorted(p.name for p in folder.iterdir()
                   if p.suffix in LOADED_SUFFIXES and p.name not in NOT_SOURCE and not p.name.startswith("."))
    if not any(n.endswith(".safetensors") for n in names):
        raise DataError(f"{rel}: no .safetensors weights in the base release folder ({BASE_KEY})")
    return [f"{rel}/{n}" for n in names]


def base_block(root: Path, rel: str, lock: BaseLock | None) -> BaseBlock:
    """The lock's `inputs.base`: the release's files, and `lock`, what its own lock says
    (`repro.lock.inputs_record.base_lock`), or None when it has none (an unverified base)."""
    digests = hash_files(root, release_files(root, rel))
    return {"path": rel, "files": [d.to_json() for d in digests], "root_digest": root_digest(digests),
            "status": UNVERIFIED if lock is None else LOCKED, "lock": lock}


def require_consistent(base: BaseBlock) -> None:
    """A build refuses a base whose weights differ from its own lock: it is not the model
    that lock describes, and recording both would make the lineage a lie. (Verify
    instead reports the changed file against the fine-tune's lock.)"""
    lock = base["lock"]
    if lock is None:
        return
    got = {f["path"]: f["hashes"]["sha256"] for f in base["files"]}.get(lock["weights_path"])
    if got != lock["weights_sha256"]:
        raise DataError(f"{lock['weights_path']}: sha256 {str(got)[:12]}…, but the base's own {LOCK_NAME} says "
                        f"{lock['weights_sha256'][:12]}…; the base release is not the model its lock describes")


def with_base_path(model_node: JsonObject, root: Path) -> JsonObject:
    """The model's config node with `base` made absolute, for the builder to load from."""
    rel = model_node.get("base")
    if rel is None:
        return model_node
    return {**model_node, "base": str(resolve_under(root, str(rel), f"config key {BASE_KEY}"))}
