"""The chain of stages behind a build's data: find, check and order their records. No torch.

A file the training reads is either primary source (no stage declares it as an
output) or an intermediate (a stage's output). For every intermediate, the
record of the stage that made it must exist and must name the file's current
digest; then the same holds, recursively, for that stage's own inputs. The
result, upstream first, is what a training lock embeds as `inputs.stages`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from repro.errors import DataError
from repro.lock import stagerecord
from repro.records import StageRecord
from repro.source.stages import StageSpec, producer, stage_specs


def upstream_records(resolved: Mapping[str, object], root: Path, digests: dict[str, str]) -> list[StageRecord]:
    """Records of the stages that made these files (path -> sha256 as hashed now), transitively.

    An intermediate without a record, or whose digest is not the one its record
    names, is a DataError naming the file and the command that makes it.
    """
    specs = stage_specs(resolved)
    found: dict[str, StageRecord] = {}
    todo = dict(digests)
    while todo:
        path, sha = todo.popitem()
        spec = producer(specs, path)
        if spec is None:
            continue  # primary source
        record = found.get(spec.name) or _record(spec, root, path)
        recorded = stagerecord.output_digests(record).get(path)
        if recorded != sha:
            raise DataError(f"{path}: stage {spec.name} made it, but it differs from {spec.record} "
                            f"(sha256 {sha[:12]}…, recorded {str(recorded)[:12]}…); run `repro run {spec.name}`")
        if spec.name not in found:
            found[spec.name] = record
            todo.update({f["path"]: f["hashes"]["sha256"] for f in record["inputs"]["files"]})
    return [found[name] for name in specs if name in found]


def _record(spec: StageSpec, root: Path, path: str) -> StageRecord:
    if not (root / spec.record).is_file():
        raise DataError(f"{path}: an output of stage {spec.name}, which has no record at {spec.record}; "
                        f"run `repro run {spec.name}`")
    return stagerecord.read(root / spec.record)
