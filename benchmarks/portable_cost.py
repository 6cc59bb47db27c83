"""What does the default (portable) profile cost? Its build time divided by `build=native`'s, same run.

    .venv/bin/python benchmarks/portable_cost.py [--repeats 3] [--cases digits,tiny-lm,big]
                                                 [--lm-steps 60] [--big-steps 10] [--threads 2]

The default profile trains through repro's portable kernels (docs/portable.md); `build=native`
through torch's own MKL and oneDNN kernels, as fast as this CPU allows and tied to it. Each build is
a fresh `repro train` process; the figure compared is the build's own time as `repro train`
reports it (hashing, data, model, the steps, evaluation and samples; not interpreter start-up).
Cases, each run native then default, `--repeats` times, interleaved:

  digits   the embedded example (MLP, Adam, 300 steps): a tiny GEMM, where fixed costs dominate
  tiny-lm  examples/tiny-lm's `train` config (GPT-2, 4 x 128, AdamW), `--lm-steps` steps
  big      the same model 8 x 512 wide (27M parameters, `--config-name big`), `--big-steps` steps

It prints the median of each and the ratio default / native, with the machine's load average
before and after: the CPU this runs on is shared, so say the load next to every figure you record.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home()),
       "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def repro(args: list[str], cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "repro", *args], cwd=cwd, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"repro {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def build_seconds(args: list[str], cwd: Path) -> float:
    out = repro(["train", "--quiet", "--no-resume", *args], cwd)
    m = re.search(r"^time\s+([0-9.]+) s", out, re.M)
    if m is None:
        raise SystemExit(f"no build time in the output of repro train {' '.join(args)}:\n{out}")
    return float(m.group(1))


def tiny_lm(work: Path) -> Path:
    """A copy of examples/tiny-lm with its tokenize stage run (the blocks both LM cases train on)."""
    project = work / "tiny-lm"
    source = REPO / "examples" / "tiny-lm"

    def outputs(folder: str, names: list[str]) -> set[str]:  # built files at the top level, never configs/data
        return {n for n in names if Path(folder) == source and (n.startswith("out") or n.startswith("data"))}

    shutil.copytree(source, project, ignore=outputs)
    repro(["run", "tokenize"], project)
    return project


Case = tuple[Path, list[str]]  # where to run `repro train`, and its arguments


def cases(work: Path, names: list[str], lm_steps: int, big_steps: int, threads: int) -> dict[str, Case]:
    out: dict[str, Case] = {}
    pinned = [f"build.threads={threads}"]
    if "digits" in names:
        (work / "digits").mkdir()
        out["digits"] = (work / "digits", ["out_dir=out", *pinned])
    if "tiny-lm" in names or "big" in names:
        lm = tiny_lm(work)
        if "tiny-lm" in names:
            out["tiny-lm"] = (lm, [f"trainer.max_steps={lm_steps}", "out_dir=out-bench", *pinned])
        if "big" in names:
            out["big"] = (lm, ["--config-name", "big", f"trainer.max_steps={big_steps}", "out_dir=out-bench-big",
                               *pinned])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default="digits,tiny-lm,big")
    ap.add_argument("--lm-steps", type=int, default=60)
    ap.add_argument("--big-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="repro-portable-cost-") as tmp:
        todo = cases(Path(tmp), a.cases.split(","), a.lm_steps, a.big_steps, a.threads)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(a.repeats):
            for name, (cwd, args) in todo.items():
                for profile in ("native", "default"):
                    times.setdefault((name, profile), []).append(build_seconds([*args, f"build={profile}"], cwd))
    for name in todo:
        native, default = (statistics.median(times[(name, p)]) for p in ("native", "default"))
        shown = {p: ", ".join(f"{t:.2f}" for t in times[(name, p)]) for p in ("native", "default")}
        print(f"{name:8s} native {native:7.2f} s  default {default:7.2f} s  ratio {default / native:5.3f}x   "
              f"(native: {shown['native']}; default: {shown['default']})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
