"""Stage `prepare`: raw sensor readings (JSON lines under DVC) -> the training table.

    python pipelines/prepare.py data/raw data/prepared/train.csv

What it does, in order: read every `*.jsonl` shard in name order; drop readings
with a missing sensor value (the raw logs have a few); map `prepare.label` through
`prepare.classes` (its position is the class id); write the `prepare.features`
columns plus `label` as CSV. Settings come from the `prepare` section of
params.yaml, the file DVC tracks (dvc.yaml lists the keys under `params:`).

The output must be the same bytes on every machine, because dvc.lock records its
md5: rows keep the input order, floats are written with Python's shortest
round-trip repr, and line ends are `\\n`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import yaml

from repro.canonical import atomic_write_bytes


class BadInput(Exception):
    """A raw reading breaks the data contract; the message names file and line."""


def load_settings(params: Path) -> tuple[list[str], str, list[str]]:
    section = (yaml.safe_load(params.read_text(encoding="utf-8")) or {}).get("prepare")
    if not isinstance(section, dict) or not {"features", "label", "classes"} <= section.keys():
        raise BadInput(f"{params}: expected a 'prepare' section with features, label and classes")
    return list(section["features"]), str(section["label"]), [str(c) for c in section["classes"]]


def table(raw: Path, features: list[str], label: str, classes: list[str]) -> tuple[list[list[object]], int]:
    """The training rows, and how many readings were dropped for a missing value."""
    shards = sorted(raw.glob("*.jsonl"), key=lambda p: p.name)
    if not shards:
        raise BadInput(f"{raw}: no *.jsonl shards (run `dvc pull` or `python generate.py`)")
    rows, dropped = [], 0
    for shard in shards:
        for n, line in enumerate(shard.read_text(encoding="utf-8").splitlines(), 1):
            try:
                rec = json.loads(line)
                values, name = [rec[f] for f in features], rec[label]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise BadInput(f"{shard}:{n}: expected a JSON object with {features + [label]} ({exc})") from None
            if name not in classes:
                raise BadInput(f"{shard}:{n}: {label} {name!r} is not one of prepare.classes {classes}")
            if any(v is None for v in values):
                dropped += 1
                continue
            rows.append([float(v) for v in values] + [classes.index(name)])
    return rows, dropped


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python pipelines/prepare.py RAW_DIR OUT_CSV", file=sys.stderr)
        return 2
    raw, out = Path(argv[0]), Path(argv[1])
    try:
        features, label, classes = load_settings(Path("params.yaml"))
        rows, dropped = table(raw, features, label, classes)
    except (BadInput, OSError) as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 2
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*features, "label"])
    writer.writerows(rows)
    atomic_write_bytes(out, buf.getvalue().encode("utf-8"))
    print(f"prepare: {len(rows)} rows -> {out} ({dropped} readings dropped for a missing value)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
