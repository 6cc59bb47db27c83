"""What do the per-step parameter digests cost? Ratios, measured in one run.

    .venv/bin/python benchmarks/step_digest_cost.py [--steps 3000] [--repeats 5] [--check]

repro's loop on the digits example, with its per-step digests (repro.train.step_digests)
and with them switched off by patching the recorder to a no-op, interleaved so
drift hits both alike; the plain PyTorch loop of train_overhead.py as a
reference. Goal: digests <= 1.05x the loop without them. Also checks that the
weights are the same bytes either way (digesting reads, never writes).

--check also times `repro check --steps 20` with its default axes on the
digits example (every axis this machine can run, qemu CPU models included).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from train_overhead import REPO, digest, plain_loop, repro_loop  # sets ATEN_CPU_CAPABILITY before torch


def loop_without_digests(steps: int) -> tuple[float, dict]:
    from repro.train import step_digests as trace

    real = trace.StepDigests.record
    trace.StepDigests.record = lambda self: self.digests.append("")  # type: ignore[method-assign]
    try:
        return repro_loop(steps)
    finally:
        trace.StepDigests.record = real  # type: ignore[method-assign]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--check", action="store_true", help="also time `repro check` with its default axes")
    a = ap.parse_args()
    plain, on, off = [], [], []
    for _ in range(a.repeats):
        t, _ = plain_loop(a.steps)
        plain.append(t / (a.steps - 1) * 1e3)
        t, with_state = repro_loop(a.steps)
        on.append(t / (a.steps - 1) * 1e3)
        t, without_state = loop_without_digests(a.steps)
        off.append(t / (a.steps - 1) * 1e3)
    p, w, n = statistics.median(plain), statistics.median(on), statistics.median(off)
    print(f"loop      plain {p:.4f}   repro without digests {n:.4f}   repro with digests {w:.4f} ms/step")
    print(f"ratio     digests {w / n:.3f}x the loop without them (goal <= 1.05x); repro/plain {w / p:.3f}x")
    print(f"weights   identical with and without digests: {digest(with_state) == digest(without_state)}")
    if a.check:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "repro", "check", "--steps", "20"], cwd=tmp,
                                  capture_output=True, text=True, env=None)
            print(f"check     repro check --steps 20 (default axes): {time.perf_counter() - start:.0f} s wall, "
                  f"exit {proc.returncode}")
            print(proc.stdout)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
