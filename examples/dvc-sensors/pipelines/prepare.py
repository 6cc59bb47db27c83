"""Stage `prepare`: raw sensor readings (JSON lines under DVC) -> the training table.

    repro run prepare --config-dir . --config-name params --root .   # as dvc.yaml runs it

Declared under `stages.prepare` in configs/train.yaml. What it does, in order:
read every `*.jsonl` shard of its inputs in name order; drop readings with a
missing sensor value (the raw logs have a few); map `label` through `classes`
(its position is the class id); write the `features` columns plus `label` as CSV.

The output must be the same bytes on every machine, because the stage record
and dvc.lock record its digest: rows keep the input order, floats are written
with Python's shortest round-trip repr, and line ends are `\\n`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from repro.errors import DataError


class BadInput(DataError):
    """A raw reading breaks the data contract; the message names file and line."""


def table(shards: list[Path], features: list[str], label: str, classes: list[str]) -> tuple[list[list[object]], int]:
    """The training rows, and how many readings were dropped for a missing value."""
    if not shards:
        raise BadInput("prepare: no *.jsonl shards among its inputs (run `dvc pull` or `python generate.py`)")
    rows, dropped = [], 0
    for shard in shards:
        name_shown = os.path.relpath(shard)
        for n, line in enumerate(shard.read_text(encoding="utf-8").splitlines(), 1):
            try:
                rec = json.loads(line)
                values, name = [rec[f] for f in features], rec[label]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise BadInput(f"{name_shown}:{n}: expected a JSON object with {features + [label]} ({exc})") from None
            if name not in classes:
                raise BadInput(f"{name_shown}:{n}: {label} {name!r} is not one of prepare.classes {classes}")
            if any(v is None for v in values):
                dropped += 1
                continue
            rows.append([float(v) for v in values] + [classes.index(name)])
    return rows, dropped


def prepare(inputs: list[Path], outputs: list[Path], *, features: list[str], label: str,
            classes: list[str]) -> None:
    """The stage: `inputs` are the raw shards (a folder's files), `outputs` the training table."""
    [out] = outputs
    shards = sorted((p for p in inputs if p.suffix == ".jsonl"), key=lambda p: p.name)
    rows, dropped = table(shards, features, label, classes)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*features, "label"])
    writer.writerows(rows)
    out.write_bytes(buf.getvalue().encode("utf-8"))
    print(f"prepare: {len(rows)} rows ({dropped} readings dropped for a missing value)")
