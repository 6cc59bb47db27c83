"""Stage `prepare` of the root pipeline: the raw digits CSV -> the training set.

    repro run prepare --config-dir . --config-name params --root .   # as dvc.yaml runs it

Declared under `stages.prepare` in configs/pipeline.yaml. Checks the data contract
before any training starts (64 pixel columns of integers 0..16, then an integer
label 0..9) and keeps the rows whose label is listed in `prepare.classes`, so a
subset of digits is one DVC param away (`dvc exp run -S 'prepare.classes=[3,8]'`).
A broken row stops the stage with one line naming file, line and field (exit 2).

The output is the same bytes on every machine (its stage record and dvc.lock
record its digest): rows keep the input order, integers only, `\\n` line ends.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from repro.errors import DataError

HEADER = [f"p{i}" for i in range(64)] + ["label"]


class BadInput(DataError):
    """The raw file breaks the data contract; the message names file, line and field."""


def check_classes(classes: object) -> set[int]:
    if not isinstance(classes, list) or not all(isinstance(c, int) and 0 <= c <= 9 for c in classes):
        raise BadInput(f"prepare.classes: expected a list of digits 0..9, got {classes!r}")
    return set(classes)


def rows(path: Path, keep: set[int]) -> list[list[int]]:
    raw = os.path.relpath(path)  # errors name the file as the project knows it
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        if next(reader, None) != HEADER:
            raise BadInput(f"{raw}:1: expected the header p0..p63,label")
        out = []
        for n, row in enumerate(reader, 2):
            if len(row) != len(HEADER):
                raise BadInput(f"{raw}:{n}: expected {len(HEADER)} fields, got {len(row)}")
            try:
                values = [int(v) for v in row]
            except ValueError:
                raise BadInput(f"{raw}:{n}: expected integers, got {row[:3]}...") from None
            if not all(0 <= v <= 16 for v in values[:-1]) or not 0 <= values[-1] <= 9:
                raise BadInput(f"{raw}:{n}: pixels must be 0..16 and the label 0..9")
            if values[-1] in keep:
                out.append(values)
    return out


def prepare(inputs: list[Path], outputs: list[Path], *, classes: list[int]) -> None:
    """The stage: `inputs` is the raw CSV, `outputs` the training set."""
    [raw], [out] = inputs, outputs
    kept = rows(raw, check_classes(classes))
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(kept)
    out.write_bytes(buf.getvalue().encode("utf-8"))
    print(f"prepare: {len(kept)} rows -> {out.name}")
