"""Stage `prepare` of the root pipeline: the raw digits CSV -> the training set.

    python pipelines/prepare.py repro/examples/digits/digits.csv data/digits/train.csv

Checks the data contract before any training starts (64 pixel columns of integers
0..16, then an integer label 0..9) and keeps the rows whose label is listed in
`prepare.classes` of params.yaml, so a subset of digits is one DVC param away
(`dvc exp run -S 'prepare.classes=[3,8]'`). A broken row stops the stage with one
line naming file, line and field, and exit code 2.

The output is written as the same bytes on every machine (dvc.lock records its
md5): rows keep the input order, integers only, `\\n` line ends.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import yaml

from repro.canonical import atomic_write_bytes

HEADER = [f"p{i}" for i in range(64)] + ["label"]


class BadInput(Exception):
    """The raw file breaks the data contract; the message names file, line and field."""


def classes_from(params: Path) -> set[int]:
    section = (yaml.safe_load(params.read_text(encoding="utf-8")) or {}).get("prepare") or {}
    classes = section.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, int) and 0 <= c <= 9 for c in classes):
        raise BadInput(f"{params}: prepare.classes: expected a list of digits 0..9, got {classes!r}")
    return set(classes)


def rows(raw: Path, keep: set[int]) -> list[list[int]]:
    with raw.open(newline="", encoding="utf-8") as fh:
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


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python pipelines/prepare.py RAW_CSV OUT_CSV", file=sys.stderr)
        return 2
    raw, out = Path(argv[0]), Path(argv[1])
    try:
        kept = rows(raw, classes_from(Path("params.yaml")))
    except (BadInput, OSError) as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 2
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(kept)
    atomic_write_bytes(out, buf.getvalue().encode("utf-8"))
    print(f"prepare: {len(kept)} rows -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
