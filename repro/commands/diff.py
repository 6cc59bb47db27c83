"""Show how two lockfiles differ, grouped as inputs, build and outputs.

The vocabulary is `repro verify`'s: data and code files by path, config by
dotted key with both values, pins, packages, tensors by name, and the first
logged training step whose loss differs. Exits 0 when the locks are identical,
1 when they differ, 2 when either cannot be read. Never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A.lock", help="the first lockfile (its values are shown on the left)")
    p.add_argument("b", metavar="B.lock", help="the second lockfile")
    p.add_argument("--json", action="store_true", help="print the differences as one JSON report")


def run(args: argparse.Namespace) -> int:
    from repro.canonical import canonical_json
    from repro.lock import lockfile
    from repro.lock.diff import compare_locks, render
    from repro.safeio import printable

    a, b = lockfile.read(Path(args.a)), lockfile.read(Path(args.b))
    diffs = compare_locks(a, b)
    if args.json:
        sys.stdout.buffer.write(canonical_json({
            "version": 1, "a": args.a, "b": args.b, "result": "differ" if diffs else "identical",
            "differences": [d.to_json() for d in diffs],
        }))
    elif diffs:
        total = f"{len(diffs)} difference{'s' if len(diffs) != 1 else ''}"
        lines = [f"--- {args.a}", f"+++ {args.b}", *render(diffs), total]
        print("\n".join(printable(line) for line in lines))
    else:
        print(printable(f"identical: {args.a} and {args.b} describe the same build"))
    return 1 if diffs else 0
