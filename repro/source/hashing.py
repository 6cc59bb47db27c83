"""Content hashing of file trees: a list of files' digests and the root digest. Never imports torch.

The root digest is defined in docs/lockfile.md ("Data"): sha256 over the lines
``<sha256-hex>  <relative-posix-path>\\n`` for every file, sorted by the UTF-8
bytes of the path. That is `sha256sum`'s own output format, so anyone can check a
root digest with coreutils alone, and it does not depend on file system order,
the absolute location, or the platform's path separator.

`hash_files` is the way in. Below it, `repro.source.hashtree` hashes many files at
once (threads, the stat cache in `repro.source.hashcache`, compact results), and
`repro.source.hashfile` reads one; `repro.source.statkey` is the stat both check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Unpack

from repro.source.hashfile import FileDigest
from repro.source.hashtree import HashOptions, hash_tree


def hash_files(root: Path, rel_paths: Sequence[str], workers: int | None = None,
                **options: Unpack[HashOptions]) -> list[FileDigest]:
    """Hash many files under `root`; results are in the order of `rel_paths`.

    With `cache`, files whose stat is unchanged since they were last hashed are
    not read. `rehash=True` (or `cache=None`) reads every byte, as `--rehash` and
    `repro verify` need; fresh digests are stored in `cache` either way.
    `progress` gets bytes and files as they are read; `on_file` gets each digest
    as it is known (cached ones first). Both are called from worker threads.
    For a million files, `repro.source.hashtree.hash_tree` keeps the same answer in
    a compact form.
    """
    return list(hash_tree(root, rel_paths, workers, **options))


def root_digest(files: Iterable[FileDigest]) -> str:
    """The tree digest: sha256 of sorted `sha256sum`-style lines (see module doc)."""
    ordered = sorted(files, key=lambda f: f.path.encode("utf-8"))
    h = hashlib.sha256()
    for f in ordered:
        h.update(f"{f.sha256}  {f.path}\n".encode())
    return h.hexdigest()
