"""Stage records: what one stage read, ran and wrote, as canonical JSON. No torch.

`repro run NAME` writes one record per stage (docs/stages.md; the schema is
`stagerecord.schema.json` beside this module). Inputs, code, config and toolchain
are hashed *before* the stage runs, so a record can never pair outputs with code
that did not make them. A training lock embeds the records of every stage
upstream of its data (`inputs.stages`), so the lock alone names the chain back
to the primary sources: the files no stage produced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from repro.canonical import atomic_write_json, compact_json, sha256_bytes
from repro.errors import LockfileError
from repro.records import FilesBlock, JsonObject, StageDeclaration, StagePins, StageRecord, StageToolchain
from repro.safeio import printable, read_json
from repro.source.config import interpolation_in
from repro.source.filetree import safe_relpath
from repro.source.stages import StageSpec

VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "stagerecord.schema.json"


@lru_cache(maxsize=1)
def schema() -> JsonObject:
    loaded: JsonObject = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def config_sha256(declared: StageDeclaration, pins: StagePins) -> str:
    """The digest of everything configured about a stage: its declaration and its pins."""
    return sha256_bytes(compact_json({"declared": declared, "pins": pins}))


def assemble(spec: StageSpec, pins: StagePins, inputs: FilesBlock, code: FilesBlock,
             toolchain: StageToolchain, outputs: FilesBlock) -> StageRecord:
    """A record, validated so that a writer bug cannot ship a bad one."""
    declared = spec.declaration()
    record: StageRecord = {"version": VERSION, "stage": spec.name, "declared": declared, "pins": pins,
              "config_sha256": config_sha256(declared, pins), "inputs": inputs, "code": code,
              "toolchain": toolchain, "outputs": outputs}
    validate(record, f"stage record {spec.name} (being written)")
    return record


def write(path: Path, record: StageRecord) -> bytes:
    return atomic_write_json(path, record)


def validate(record: Any, where: str) -> None:
    """Version, schema and path safety; LockfileError naming the field."""
    from repro.lock.fastschema import first_error

    if not isinstance(record, dict):
        raise LockfileError(f"{where}: expected a JSON object")
    if record.get("version") != VERSION:
        raise LockfileError(f"{where}: field 'version': expected {VERSION}, got {record.get('version')!r}")
    err = first_error(record, schema())
    if err is not None:
        field = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        message = err.message if len(err.message) < 160 else err.message[:157] + "..."
        raise LockfileError(f"{where}: field '{field}': {message}")
    for block in ("inputs", "outputs", "code"):
        for f in record[block]["files"]:
            safe_relpath(f["path"], f"{where}: {block} path")
    found = interpolation_in(record["declared"])
    if found is not None:
        raise LockfileError(f"{where}: field 'declared.{printable(found[0])}': {printable(repr(found[1][:80]))} is an "
                            "interpolation (${...}); a record holds the values a stage ran with")
    if record["config_sha256"] != config_sha256(record["declared"], record["pins"]):
        raise LockfileError(f"{where}: field 'config_sha256' does not match its declaration and pins "
                            "(the record was edited after the stage ran)")


def read(path: Path) -> StageRecord:
    """Parse (strictly: a regular file, capped, no duplicate keys) and validate a record file."""
    record, _ = read_json(path, "stage record", LockfileError)
    validate(record, str(path))
    return cast(StageRecord, dict(record))  # validated against the schema that StageRecord mirrors


def spec_of(record: StageRecord, record_path: str) -> StageSpec:
    """The stage a record describes, runnable again from the record alone."""
    return StageSpec.from_declaration(record["stage"], record["declared"], record_path)


def output_digests(record: StageRecord) -> dict[str, str]:
    return {f["path"]: f["hashes"]["sha256"] for f in record["outputs"]["files"]}


def chain_line(records: Sequence[StageRecord]) -> str:
    """`prepare -> train`: the stages a lock was built through, upstream first."""
    return " -> ".join([*(r["stage"] for r in records), "train"])
