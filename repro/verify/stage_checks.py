"""verify's look at the stages behind the data: their code, inputs and records, re-hashed today. No torch.

The lock embeds the record of every stage that made its data (`inputs.stages`).
A stage whose code or input changed since it made its outputs means the data
the lock names would no longer be made from this source, even though the data
files themselves still match: plain verify and `--inputs-only` must say so, not
only `--from-source`. Each difference names the stage, the file and the command
that remakes it (`repro run NAME`).

- a stage's code file (imported or listed in `code`) that changed or is gone: a
  difference;
- an input that changed: a difference; one that is not here (a raw file only
  DVC holds) is a note, since `--from-source` is what needs it;
- an output beyond the training data (an intermediate another stage reads) that
  changed: a difference;
- the stage's record file, where the lock's config puts it, rewritten with another
  declaration or pins than the lock's: a difference (the stage was rerun with
  other params).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from repro.errors import ReproError
from repro.lock import stagerecord
from repro.lock.lockdiff import Difference, compare_files, compare_stage_records
from repro.lock.types import FileRecord, Lock, StageRecord
from repro.source.filetree import resolve_under
from repro.source.hashing import hash_files
from repro.source.stages import default_record

STAGE_KINDS = ("stage", "stage config", "stage input", "stage code", "stage output")


def check_stages(lock: Lock, root: Path) -> tuple[list[Difference], list[Difference]]:
    """(differences, notes) between the lock's stage records and the project as it is now."""
    diffs: list[Difference] = []
    notes: list[Difference] = []
    data = {f["path"] for f in lock["inputs"]["data"]["files"]}
    for record in lock["inputs"].get("stages", []):
        name = str(record["stage"])
        outputs = [f for f in record["outputs"]["files"] if f["path"] not in data]
        for kind, files, missing_is_note in (("stage code", record["code"]["files"], False),
                                            ("stage input", record["inputs"]["files"], True),
                                            ("stage output", outputs, True)):
            found, gone = _rehash(root, files)
            for d in compare_files(kind, [f for f in files if f["path"] not in gone], found):
                diffs.append(dataclasses.replace(d, name=f"{name}: {d.name}",
                                                 detail=f"changed since stage {name} made its outputs: "
                                                        f"`repro run {name}`"))
            for f in files:
                if f["path"] in gone:
                    d = Difference("inputs", kind, f"{name}: {f['path']}", "removed", f["hashes"]["sha256"], None)
                    if missing_is_note:
                        notes.append(dataclasses.replace(d, detail="not here, so not checked; `dvc pull` it, "
                                                                   "or `repro verify --from-source` needs it"))
                    else:
                        diffs.append(dataclasses.replace(d, detail=f"gone since stage {name} ran: restore it, "
                                                                   f"or change the stage and `repro run {name}`"))
        diffs += _record_on_disk(record, root, _record_path(lock, record))
    return diffs, notes


def _record_path(lock: Lock, record: StageRecord) -> str | None:
    """Where the stage's record lives: as the lock's own config declares it, else the default place."""
    from repro.errors import ConfigError
    from repro.source.stages import stage_specs

    try:
        spec = stage_specs(lock["inputs"]["config"]["resolved"]).get(str(record["stage"]))
    except ConfigError:
        spec = None
    outputs = record["declared"]["outputs"]
    return spec.record if spec is not None else default_record(record["stage"], outputs[0]) if outputs else None


def _rehash(root: Path, files: Sequence[FileRecord]) -> tuple[list[FileRecord], set[str]]:
    """Today's records of these files under root (every byte read), and the paths that are not there."""
    present: list[str] = []
    gone: set[str] = set()
    for f in files:
        if resolve_under(root, f["path"], "stage file").is_file():
            present.append(f["path"])
        else:
            gone.add(f["path"])
    found = [d.to_json() for d in hash_files(root, present)] if present else []
    return found, gone


def _record_on_disk(record: StageRecord, root: Path, rel: str | None) -> list[Difference]:
    """The stage's record file, if it declares the stage otherwise than the lock does (rerun with other params)."""
    name = str(record["stage"])
    if rel is None or not os.path.lexists(resolve_under(root, rel, "stage record")):
        return []
    try:
        current = stagerecord.read(root / rel)
    except ReproError:
        return []  # a record the stage will rewrite; its outputs are what verify compares
    if current["config_sha256"] == record["config_sha256"]:
        return []
    changed = [d for d in compare_stage_records(record, current) if d.kind == "stage config"]
    keys = ", ".join(d.name.partition(": ")[2] or d.name for d in changed[:3]) or "its declaration"
    return [Difference("inputs", "stage config", f"{name}: {rel}", "changed", record["config_sha256"],
                       current["config_sha256"], f"the stage was rerun with other settings ({keys}) than the "
                                                 f"lock's; run `repro train` to build from them, or rerun "
                                                 f"`repro run {name}` with the lock's")]
