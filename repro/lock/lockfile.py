"""repro.lock: assemble, write canonically, read and validate. No torch.

The format is specified in docs/lockfile.md and by `lockfile.schema.json` beside
this module. Nothing machine-incidental goes in: no timestamps, hostnames or
absolute paths, so two honest builds of the same source give the same bytes.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from repro.canonical import atomic_write_json, sha256_bytes
from repro.errors import LockfileError
from repro.lock import stagerecord
from repro.lock.types import Build, Inputs, JsonObject, Lock, Outputs, Toolchain
from repro.safeio import loads, printable, read_bytes
from repro.source.config import interpolation_in
from repro.source.filetree import safe_relpath

VERSION = 2  # 2: the toolchain section; imported project code in inputs.code; build.env
# 3: version 2 plus `build.resumes`, written only by a build that resumed from a checkpoint made from
# another source. Every other lock stays version 2, byte for byte; a version 2 reader refuses a version 3
# lock rather than ignore the record (`build` is an open object).
RESUMED_VERSION = 3
VERSIONS = (VERSION, RESUMED_VERSION)
SCHEMA_PATH = Path(__file__).resolve().parent / "lockfile.schema.json"
# Entries (files and tensors) a lock may list, counted before it is parsed (docs/security.md, "Caps"):
# far above any lock written so far, far below the 64 MiB byte cap's ~330,000.
MAX_LOCK_ENTRIES = 250_000


@lru_cache(maxsize=1)
def schema() -> JsonObject:
    loaded: JsonObject = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def assemble(inputs: Inputs, build: Build, outputs: Outputs, toolchain: Toolchain) -> Lock:
    """The lock; `validate` is applied so a writer bug cannot ship a bad lock.

    `inputs` is the source (data, project code, config), `build` the pins,
    `toolchain` what compiled it (interpreter, libraries, repro's compiler).
    A `build` with `resumes` makes a version 3 lock.
    """
    version = RESUMED_VERSION if "resumes" in build else VERSION
    lock: Lock = {"version": version, "inputs": inputs, "build": build, "toolchain": toolchain, "outputs": outputs}
    validate(lock, "repro.lock (being written)")
    return lock


def logged_steps(steps: int, every: int) -> list[int]:
    """The 1-based steps whose loss is logged (the lock's loss trajectory, metrics.jsonl): every N-th, and the last."""
    return [s for s in range(1, steps + 1) if s % every == 0 or s == steps]


def write(path: Path, lock: Lock) -> bytes:
    return atomic_write_json(path, lock)


def validate(lock: Any, where: str) -> None:
    """Check version, schema and path safety; raise LockfileError naming the field."""
    from repro.lock.fastschema import first_error

    if not isinstance(lock, dict):
        raise LockfileError(f"{where}: expected a JSON object at the top level")
    version = lock.get("version")
    if version not in VERSIONS:
        if isinstance(version, int) and version > RESUMED_VERSION:
            raise LockfileError(
                f"{where}: version {version} is newer than this repro understands ({RESUMED_VERSION}); upgrade repro")
        raise LockfileError(f"{where}: field 'version': expected {VERSION}, got {version!r}")
    err = first_error(lock, schema())
    if err is not None:
        field = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        if err.validator == "not" and isinstance(err.instance, str):  # the relpath rule: say it plainly
            raise LockfileError(f"{where}: field '{field}': {err.instance!r} escapes the project root "
                                "(expected a relative path without '..')")
        raise LockfileError(f"{where}: field '{field}': {_short(err.message)}")
    for section in (lock["inputs"]["data"], lock["inputs"]["code"], lock["toolchain"]["repro"]):
        for f in section["files"]:
            safe_relpath(f["path"], f"{where}: file path")
    for i, record in enumerate(lock["inputs"].get("stages", [])):
        stagerecord.validate(record, f"{where}: inputs.stages.{i}")
    pre_file = lock["inputs"]["data"].get("preprocess", {}).get("file")
    if pre_file is not None:
        safe_relpath(pre_file["path"], f"{where}: preprocess file path")
    found = interpolation_in(lock["inputs"]["config"]["resolved"])
    if found is not None:
        raise LockfileError(f"{where}: config key {printable(found[0])}: {printable(repr(found[1][:80]))} is an "
                            "interpolation (${...}); a lock's config was resolved when it was written and holds "
                            "values only")


def load(path: Path, root: Path | None = None) -> tuple[Lock, str]:
    """Read a lockfile once: the validated lock and the sha256 of the very bytes parsed.

    A link is followed (the user named this file), but only to a regular file under
    the size cap; the JSON is strict (repro.safeio). With `root`, `path` is relative
    to it and opened beneath it, a link on the way pointing only inside (a fine-tune's
    base lock, named by its config). Every failure is one LockfileError line.
    """
    if root is None:
        raw = read_bytes(path, "lockfile", error=LockfileError, follow_links=True)
    else:
        raw = read_bytes(path, "lockfile", error=LockfileError, root=root, links="inside")
    entries = raw.count(b'"path"') + raw.count(b'"dtype"')  # each file names a path, each tensor a dtype
    if entries > MAX_LOCK_ENTRIES:
        raise LockfileError(f"{printable(str(path))}: lists about {entries} files and tensors, over the cap of "
                            f"{MAX_LOCK_ENTRIES} entries for a lockfile")
    lock = loads(raw, str(path), LockfileError)
    validate(lock, printable(str(path)))
    return cast(Lock, dict(lock)), sha256_bytes(raw)  # validated against the schema that Lock mirrors


def read(path: Path) -> Lock:
    """Parse and validate a lockfile (see `load`, which also gives the digest of its bytes)."""
    return load(path)[0]


def _short(message: str) -> str:
    return message if len(message) < 160 else message[:157] + "..."


def read_step_digests(out_dir: Path, lock: Lock) -> list[str] | None:
    """The per-step parameter digests beside a lock, if present and matching its record."""

    record = lock["outputs"].get("step_digests")
    if record is None:
        return None
    path = Path(out_dir) / safe_relpath(record["path"], "outputs.step_digests.path")
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if sha256_bytes(raw) != record["sha256"]:
        return None
    lines = raw.decode("ascii", errors="replace").split("\n")[:-1]
    return lines if len(lines) == record["steps"] + 1 else None
