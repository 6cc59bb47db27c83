"""Do the AVX-512 and the AVX2 vector math of repro's portable kernels give the same bits?

    .venv/bin/python scripts/check_vector_widths.py            # every one of the 2^32 float32 inputs
    .venv/bin/python scripts/check_vector_widths.py --sample N # N inputs at each of 16 spread-out places

On an AVX-512 machine the portable kernels compute exp, log, tanh, ... 16 lanes at a time with SLEEF's
AVX-512 code, where an AVX2-only machine runs ATen's own AVX2 code (SLEEF's 8-lane functions, and IEEE
sqrt). That is a speed choice only if the two agree on every input: this script asks the library itself
(`compare_widths`: both paths on the same bit patterns; two NaNs count as equal). Exit 1 if any differs.
The full run takes tens of minutes on two cores; docs/portable.md has its result.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from repro.environment.machine import cpu_flags
from repro.train import kernels

NAMES = ("exp", "log", "log2", "log10", "sqrt", "tanh", "erf", "erfc", "sin", "cos", "tan", "asin", "acos", "atan")


def ranges(sample: int | None) -> list[tuple[int, int]]:
    if sample is None:
        return [(0, 1 << 32)]
    return [(top, top + sample) for top in range(0, 1 << 32, 1 << 28)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, help="inputs at each of 16 places instead of all 2^32")
    ap.add_argument("--only", help="comma-separated function names")
    a = ap.parse_args()
    if "avx512f" not in cpu_flags():
        print("this CPU has no AVX-512: the AVX2 code is the only one here, nothing to compare")
        return 0
    kernels.enable(refuse=True)
    names = a.only.split(",") if a.only else NAMES
    failed = False
    for name in names:
        started, differ, total = time.monotonic(), 0, 0
        for lo, hi in ranges(a.sample):
            differ += int(torch.ops.repro_portable.compare_widths(name, lo, hi))
            total += hi - lo
        failed = failed or differ > 0
        print(f"{name}: {differ} of {total} inputs differ ({time.monotonic() - started:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
