"""Write the example's raw data: synthetic pump sensor readings, deterministically.

Why generated and not downloaded: the example needs raw data that lives under DVC
(cache and remote, never git), and the tests must own it. The same arguments give
the same bytes on any machine: values come from Python's Mersenne Twister
(`random.Random`, stable across platforms and Python versions) and are written with
fixed rounding and a fixed key order.

    python generate.py                # data/raw/readings-00.jsonl ... -03.jsonl
    python generate.py --shards 8 --rows 500 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path

# Per status: mean (flow, pressure, temperature, vibration); spread is shared.
MEANS = {
    "ok": (1.0, 0.6, -0.4, -0.8),
    "worn": (0.1, -0.2, 0.5, 0.3),
    "failing": (-0.9, -0.7, 1.1, 1.2),
}
SPREAD = 0.55
FIELDS = ("flow", "pressure", "temperature", "vibration")
MISSING_RATE = 0.03  # a sensor drops out now and then: `prepare` has to deal with it


def records(shard: int, rows: int, rng: random.Random) -> list[dict[str, object]]:
    """One shard's readings; a few values are null, as real sensor logs have."""
    out: list[dict[str, object]] = []
    statuses = sorted(MEANS)
    for i in range(rows):
        status = statuses[rng.randrange(len(statuses))]
        rec: dict[str, object] = {"pump": f"P{shard:02d}-{i:04d}"}
        for name, mean in zip(FIELDS, MEANS[status], strict=True):
            value = round(rng.gauss(mean, SPREAD), 3)
            rec[name] = None if rng.random() < MISSING_RATE else value
        rec["status"] = status
        out.append(rec)
    return out


def write_shard(path: Path, recs: list[dict[str, object]]) -> None:
    """Temp file + rename, so an interrupted run never leaves half a shard for `dvc add`."""
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in recs)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/raw", help="folder for the shards (default: data/raw)")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--rows", type=int, default=200, help="readings per shard")
    p.add_argument("--seed", type=int, default=20240601)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for shard in range(args.shards):
        write_shard(out / f"readings-{shard:02d}.jsonl", records(shard, args.rows, rng))
    print(f"wrote {args.shards} shards x {args.rows} readings to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
