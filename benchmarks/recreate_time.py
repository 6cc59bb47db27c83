"""How long does `repro verify --toolchain recreate` take to provision the toolchain, cold and cached?

    .venv/bin/python benchmarks/recreate_time.py [--installers uv pip]

Builds a repro wheel from this checkout, scaffolds a project (`repro init`),
trains it (20 steps), then verifies it twice per installer with a fresh cache
folder: the first run installs the recorded toolchain (cold), the second reuses
it (cached). Prints the provisioning seconds each verify reports
(`rebuild.toolchain.seconds`), not the rebuild's training time, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "repro", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"repro {args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--installers", nargs="+", default=["uv", "pip"])
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="repro-recreate-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(work / "wheels"), str(REPO)], check=True, capture_output=True)
        run(["init", "proj"], work, env)
        project = work / "proj"
        run(["train", "--quiet", "trainer.max_steps=20"], project, env)
        for installer in args.installers:
            cache = {**env, "REPRO_TOOLCHAIN_CACHE": str(work / f"cache-{installer}"),
                     "REPRO_TOOLCHAIN_INSTALLER": installer}
            times = []
            for _ in ("cold", "cached"):
                out = run(["verify", "--json", "--no-record", "--toolchain", "recreate", "--find-links",
                           str(work / "wheels"), "out/repro.lock"], project, cache)
                made = json.loads(out.stdout)["result"]["rebuild"]["toolchain"]
                times.append(made["seconds"])
            print(f"{installer:<4} cold {times[0]:7.1f} s   cached {times[1]:6.2f} s   "
                  f"cached/cold {times[1] / times[0]:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
