"""What `repro verify|audit|sign|verify-signature|attest|card PATH` accept: a release folder or its lock.

A release folder is the `out_dir` that `repro train` wrote: the weights, run.json,
metrics.jsonl and the lock, `repro.lock`, side by side (then the card, the
provenance and the signature). Each of those commands resolves PATH here, once,
into both paths, so they accept exactly the same thing. No torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from repro.errors import LockfileError
from repro.filenames import LOCK_NAME


@dataclass(frozen=True)
class ReleaseFolder:
    """`folder` holds the release's files; `lock` is its lock file (folder/repro.lock unless named)."""

    folder: Path
    lock: Path


def resolve_release(path: Path | str) -> ReleaseFolder:
    """A folder means folder/repro.lock; a file is the lock itself, and its folder the release.

    A lock under another name (a download saved as `digits.lock`) is accepted: the
    release is the folder holding it. Only a PATH that does not exist is refused
    here (LockfileError, exit 2); anything else that is not a regular file (a FIFO,
    a device, a dangling link) is left to the lock reader, which says what it is.
    """
    p = Path(path)
    if p.is_dir():
        lock = p / LOCK_NAME
        if not os.path.lexists(lock):
            raise LockfileError(f"{p}: no {LOCK_NAME} in this folder (expected a release folder or its lock file)")
        return ReleaseFolder(p, lock)
    if os.path.lexists(p):
        return ReleaseFolder(p.parent, p)
    raise LockfileError(f"{p}: no such lockfile or release folder")
