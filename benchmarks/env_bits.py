"""Which shell variables change the weights? Each alone, then all at once, through `repro train`.

    .venv/bin/python benchmarks/env_bits.py [--steps 20] [--out table.json]

Trains the digits example (this checkout's repro, `trainer.max_steps=N`) once
with a clean shell, then once per variable below set the wrong way, then with
all of them and `taskset -c 0`. Prints, per variable, whether the weights and
the lock bytes equal the clean run's. docs/environment.md holds the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Each set to a value that differs from the digits pins (2 threads, avx2, dynamic off, hash seed 0).
NOISE = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_DYNAMIC": "true",
    "MKL_DYNAMIC": "true", "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_DEBUG_CPU_TYPE": "5", "OMP_PROC_BIND": "true",
    "KMP_AFFINITY": "compact", "PYTHONHASHSEED": "123", "LC_ALL": "C", "PYTHONUTF8": "0",
}


def train(workdir: Path, name: str, steps: int, extra: dict[str, str], prefix: list[str]) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOISE}
    env.update(extra, PYTHONPATH=str(REPO), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    out = workdir / name
    subprocess.run([*prefix, sys.executable, "-m", "repro", "train", "--quiet", f"trainer.max_steps={steps}",
                    f"out_dir={out}"], cwd=workdir, env=env, check=True, stdout=subprocess.DEVNULL)
    weights = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    lock = hashlib.sha256((out / "repro.lock").read_bytes()).hexdigest()
    shutil.rmtree(out)
    return weights, lock


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="repro-env-bits-") as tmp:
        work = Path(tmp)
        base = train(work, "clean", args.steps, {}, [])
        cases = [(f"{k}={v}", {k: v}, []) for k, v in NOISE.items()]
        cases.append(("all of the above + taskset -c 0", dict(NOISE), ["taskset", "-c", "0"]))
        for label, extra, prefix in cases:
            got = train(work, "noisy", args.steps, extra, prefix)
            rows.append({"variable": label, "same_weights": got[0] == base[0], "same_lock": got[1] == base[1]})
            print(f"{label:<40} weights {'same' if got[0] == base[0] else 'DIFFER'}  "
                  f"lock {'same' if got[1] == base[1] else 'DIFFERS'}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"baseline_weights": base[0], "rows": rows}, indent=2) + "\n")
    return 0 if all(r["same_weights"] and r["same_lock"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
