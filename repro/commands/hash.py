"""Print each file's sha256 and the root digest, exactly as repro.lock records them.

PATHs are files, directories (hashed recursively) or quoted globs, inside the
root (default: the current directory); recorded paths are relative to it.
Symlinks are followed and recorded under the link's path; links leaving the
root are refused. `.git`, `.dvc` and `.repro` folders are skipped, and empty
folders are not data. The text output is `sha256sum`'s format plus a last
`root_digest` line, so this checks it with coreutils alone:

    repro hash data/ | grep -v '^root_digest' | sha256sum -c

`--json` prints the lock's own `{"files": [...], "root_digest": ...}` block as the
envelope's `result`.
Unchanged files are not re-read (stat cache in <root>/.repro/); --rehash reads
every byte.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from repro.commands import Outcome
from repro.errors import LockfileError
from repro.source.algorithms import EXTRA_ALGORITHMS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="file, directory or quoted glob")
    p.add_argument("--rehash", action="store_true", help="re-read every byte instead of trusting the stat cache")
    p.add_argument("--root", help="folder the recorded paths are relative to (default: the current directory)")
    p.add_argument("--hash", action="append", default=[], choices=EXTRA_ALGORITHMS, metavar="ALG",
                   help=f"also record ALG beside sha256 (in --json output); one of {', '.join(EXTRA_ALGORITHMS)}")
    p.add_argument("--quiet", action="store_true", help="no progress display and no summary on stderr")


def relative_to_root(root: Path, cwd: Path, typed: str) -> str:
    """A PATH as typed (relative to cwd, or absolute) as a path relative to `root`."""
    full = os.path.normpath(os.path.join(cwd, typed))
    rel = os.path.relpath(full, root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise LockfileError(f"{typed}: outside the root {root}; pass --root")
    return Path(rel).as_posix()


def run(args: argparse.Namespace) -> Outcome:
    from repro.progress import byte_bar
    from repro.source.algorithms import check_algorithms
    from repro.source.hashcache import open_cache
    from repro.source.hashtree import hash_tree
    from repro.source.walk import locate_patterns

    cwd = Path.cwd()
    root = Path(os.path.normpath(cwd / args.root)) if args.root else cwd
    rels = [relative_to_root(root, cwd, p) for p in args.paths]
    algorithms = check_algorithms(args.hash)
    started = time.monotonic()
    files = locate_patterns(root, rels)  # each file's stat taken on the walk, not again
    with open_cache(root) as cache, byte_bar(args.quiet) as bar:
        tree = hash_tree(root, files, cache=cache, rehash=args.rehash, algorithms=algorithms, progress=bar)
    seconds = time.monotonic() - started
    summary = []
    if not args.quiet:
        summary = [f"repro hash: note: {note}" for note in cache.notes]
        summary.append(f"repro hash: {len(tree)} files, {sum(tree.sizes):,} bytes, {cache.hits} unchanged "
                       f"(stat cache), {seconds:.2f} s")

    def listing(out: BinaryIO, shown: Callable[[str], str]) -> None:  # sha256sum lines, then the root digest
        out.write(f"root_digest {tree.root_digest(out, shown=shown)}\n".encode())

    # Streamed both ways: a million files are never held as dicts or one string.
    return Outcome(None, listing, result_json=tree.block_json, stderr="".join(f"{line}\n" for line in summary))
