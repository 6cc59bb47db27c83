"""Show how two lockfiles differ, grouped as inputs, build and outputs.

The vocabulary is `repro verify`'s: data and code files by path, config by
dotted key with both values, pins, packages, tensors by name, and the first
logged training step whose loss differs. Exits 0 when the locks are identical,
1 when they differ, 2 when either cannot be read. Never imports torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.commands import Outcome


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A.lock", help="the first lockfile (its values are shown on the left)")
    p.add_argument("b", metavar="B.lock", help="the second lockfile")


def run(args: argparse.Namespace) -> Outcome:
    from repro.lock import lockfile
    from repro.lock.lockdiff import compare_locks, render
    from repro.lock.stagerecord import chain_line

    a, b = lockfile.read(Path(args.a)), lockfile.read(Path(args.b))
    diffs = compare_locks(a, b)
    count = f"{len(diffs)} difference{'s' if len(diffs) != 1 else ''}"
    result = {"version": 1, "a": args.a, "b": args.b, "result": "differ" if diffs else "identical",
              "differences": [d.to_json() for d in diffs]}
    if not diffs:
        return Outcome(result, f"identical: {args.a} and {args.b} describe the same build\n")
    chains = [chain_line(lock["inputs"].get("stages", [])) for lock in (a, b)]
    chain = [f"chain  {chains[0]}" + ("" if chains[0] == chains[1] else f"  ->  {chains[1]}")
             ] if chains != ["train", "train"] else []
    text = "\n".join([f"--- {args.a}\n+++ {args.b}", *chain, *render(diffs), count]) + "\n"
    return Outcome(result, text, 1, f"the locks differ: {count}")
