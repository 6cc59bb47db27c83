"""The rules for a path the lock may record. Never imports torch.

Every path the lock records passes these: relative POSIX, inside the root after
symlinks, valid UTF-8 with no backslash or newline. `repro.source.walk` finds
the files; this module says which paths are acceptable, and where they lead.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath

from repro.errors import DataError, LockfileError
from repro.filenames import REPRO_DIR

# Tool metadata, never data: git internals, DVC's cache, and repro's own cache.
SKIP_DIRS = frozenset({".git", ".dvc", REPRO_DIR})


def safe_relpath(rel: str, what: str = "path") -> PurePosixPath:
    """Reject paths that could read outside the root: absolute, `..`, or empty."""
    check_relpath(rel, what)
    return PurePosixPath(rel)


def check_relpath(rel: str, what: str) -> None:
    """safe_relpath's checks on the string alone: cheap enough to run per file."""
    if not rel or "\\" in rel or "\n" in rel:
        raise LockfileError(f"{what} {rel!r}: expected a relative POSIX path")
    if rel[0] in "/~" or (".." in rel and ".." in rel.split("/")):  # split only when it could matter
        raise LockfileError(f"{what} {rel!r}: escapes the project root (absolute or '..')")


def resolve_under(root: Path, rel: str, what: str = "path") -> Path:
    """`root/rel`, after checking that it stays inside `root`, symlinks included."""
    safe = safe_relpath(rel, what)
    full = root.joinpath(*safe.parts)
    if not inside(os.path.realpath(root), os.path.realpath(full)):
        raise LockfileError(f"{what} {rel!r}: resolves outside the project root")
    return full


def os_reason(exc: OSError) -> str:
    reasons = {
        errno.ENOENT: "file not found",
        errno.EACCES: "permission denied while reading",
        errno.EPERM: "permission denied while reading",
        errno.EISDIR: "expected a file, found a directory",
        errno.ELOOP: "too many levels of symbolic links",
    }
    if isinstance(exc, IsADirectoryError) and exc.errno is None:
        return reasons[errno.EISDIR]
    return reasons.get(exc.errno or 0, f"cannot read ({exc.strerror or type(exc).__name__})")


def inside(real_root: str, real: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def checked_name(rel: str) -> str:
    """A path the lock can record: valid UTF-8, no backslash or newline."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = rel.encode("utf-8", "surrogateescape")
        raise DataError(f"{shown!r}: file name is not valid UTF-8; rename it") from None
    if "\\" in rel or "\n" in rel:
        raise DataError(f"{rel!r}: file name contains a backslash or newline, which the lock cannot record; rename it")
    return rel
