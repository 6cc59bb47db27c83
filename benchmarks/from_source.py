"""What does `repro verify --from-source` cost, against running the stages it reruns?

    .venv/bin/python benchmarks/from_source.py [--config-name smoke|train] [--repeats 1]

On a copy of examples/tiny-lm: time `repro run tokenize` and `repro train` (the
publisher's stages), then, with data/ deleted, `repro verify --from-source` on
the lock they wrote. Prints each figure and the ratio of --from-source to the
sum of the stage times; the difference is verify's own work (copying the
primary sources, hashing, the rebuild's process start and the comparisons).
Every command runs in a fresh process; figures are medians of the repeats.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "tiny-lm"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def timed(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "repro", *args], cwd=cwd, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"repro {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return seconds


def once(config: str, work: Path) -> tuple[float, float, float]:
    root = work / "tiny-lm"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(EXAMPLE, root, ignore=lambda d, names: {n for n in names if n == "__pycache__" or (
        Path(d) == EXAMPLE and n.split("-")[0] in ("data", "out"))})
    flags = ["--config-name", config]
    tokenize = timed(["run", "tokenize", "--quiet", *flags], root)
    train = timed(["train", "--quiet", *flags], root)
    out = "out-smoke" if config == "smoke" else "out"
    for folder in root.iterdir():
        if folder.name.split("-")[0] == "data":
            shutil.rmtree(folder)
    verify = timed(["verify", "--from-source", "--quiet", "--no-record", f"{out}/repro.lock"], root)
    return tokenize, train, verify


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-name", default="smoke")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-from-source-") as tmp:
        runs = [once(args.config_name, Path(tmp)) for _ in range(args.repeats)]
    tok, train, verify = (statistics.median(r[i] for r in runs) for i in range(3))
    print(f"config {args.config_name}, {args.repeats} repeat(s), {os.cpu_count()} cores")
    print(f"repro run tokenize        {tok:8.1f} s")
    print(f"repro train               {train:8.1f} s")
    print(f"sum of the stages         {tok + train:8.1f} s")
    print(f"verify --from-source      {verify:8.1f} s   ratio {verify / (tok + train):.2f}x the stages")


if __name__ == "__main__":
    main()
