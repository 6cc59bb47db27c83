"""What does the portable CPU profile cost? Ratios against the default profile, same run.

    .venv/bin/python benchmarks/portable_cost.py [--steps 1000] [--repeats 3]

Each build is a fresh `repro train` process (ATEN_CPU_CAPABILITY is read once, at
import); the figure compared is the build's own time as `repro train` reports it,
so interpreter start-up is left out. Cases, interleaved:
  default   build=default  (avx2, oneDNN on, torch.optim.Adam)
  default+PortableAdam     (isolates the optimizer's cost)
  portable  build=portable trainer=portable (ATen 'default' level, oneDNN off,
            MKL_CBWR=COMPATIBLE, PortableAdam)
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "default": [],
    "default+PortableAdam": ["trainer=portable"],
    "portable": ["build=portable", "trainer=portable"],
}


def build_seconds(extra: list[str], steps: int, cwd: Path) -> float:
    out = subprocess.run([sys.executable, "-m", "repro", "train", "--quiet", f"trainer.max_steps={steps}",
                          "out_dir=bench", *extra], cwd=cwd, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_DATASETS_OFFLINE": "1"}).stdout
    m = re.search(r"^time\s+([0-9.]+) s", out, re.M)
    assert m, out
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeats):
            for name, extra in CASES.items():
                times[name].append(build_seconds(extra, a.steps, Path(tmp)))
    base = statistics.median(times["default"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<22} {med:6.2f} s   ratio {med / base:5.2f}x   ({', '.join(f'{t:.2f}' for t in ts)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
