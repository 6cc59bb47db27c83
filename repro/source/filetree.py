"""Which files: expand patterns into safe relative paths under a root. Never imports torch.

Every path the lock records passes through here: relative POSIX, inside the
root after symlinks, valid UTF-8, and a regular file. Symlinks are followed
(the bytes a reader of the path gets are the bytes hashed) and recorded under
the link's own path; a link leaving the root, a loop or a dangling link is an
error. Empty directories are not data; `.git`, `.dvc` and `.repro` never are.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from repro.errors import DataError, LockfileError

# Tool metadata, never data: git internals, DVC's cache, and repro's own cache.
SKIP_DIRS = frozenset({".git", ".dvc", ".repro"})


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


def expand_patterns(root: Path, patterns: Iterable[str]) -> list[str]:
    """Expand files, directories (recursively) and globs under `root`.

    Returns sorted, unique relative POSIX paths of regular files. Symlinks, to
    files or directories, are followed and recorded under the link's own path;
    a link that resolves outside `root` is refused, as is a link loop. `.git`,
    `.dvc` and `.repro` directories are skipped inside directories. A pattern
    that matches no file is an error, so a typo cannot silently drop data.
    """
    root = Path(root)
    real_root = os.path.realpath(root)
    found: set[str] = set()
    for pattern in patterns:
        safe_relpath(pattern, "pattern")
        matches = sorted(glob.glob(pattern, root_dir=root, recursive=True))
        if not matches:
            raise DataError(f"{pattern}: no such file under {root.name or root}/ (expected a file, directory or glob)")
        matched: set[str] = set()
        for m in matches:
            rel = PurePosixPath(Path(m).as_posix()).as_posix()
            if _kind(root, real_root, rel) == "dir":
                _walk(root, real_root, "" if rel == "." else rel, matched)
            else:
                matched.add(_checked_name(rel))
        if not matched:
            raise DataError(f"{pattern}: matches only empty directories (empty directories are not data)")
        found |= matched
    # Python's str order is the UTF-8 byte order (_checked_name refused anything else), and
    # sorting the strings themselves makes no bytes copy of a million names.
    return sorted(found)


def _kind(root: Path, real_root: str, rel: str) -> str:
    """'file' or 'dir' for `root/rel` after following links (which must stay inside `root`)."""
    full = os.path.join(root, rel)
    real = os.path.realpath(full)
    if not inside(real_root, real):
        raise LockfileError(f"{rel!r}: resolves outside the project root; copy it in or track it with DVC")
    try:
        st = os.stat(full)
    except FileNotFoundError:
        raise DataError(f"{rel}: broken symlink (its target does not exist)") from None
    except OSError as exc:
        raise DataError(f"{rel}: {os_reason(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    raise DataError(f"{rel}: not a regular file (a FIFO, socket or device); expected a file")


def _walk(root: Path, real_root: str, top: str, found: set[str]) -> None:
    """Add every regular file below `root/top`; follow links to directories, refuse loops."""
    top_real = os.path.realpath(os.path.join(root, top))
    stack: list[tuple[str, str, frozenset[str]]] = [(top, top_real, frozenset({top_real}))]
    while stack:
        rel_dir, real_dir, ancestors = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir) if rel_dir else root))
        except OSError as exc:
            raise DataError(f"{rel_dir or '.'}/: cannot list ({exc.strerror})") from None
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            if e.is_symlink():
                if _kind(root, real_root, rel) == "file":
                    found.add(_checked_name(rel))
                    continue
                real = os.path.realpath(e.path)
                if real in ancestors:
                    raise DataError(f"{rel}: symlink loop (points at a directory that contains it)")
                stack.append((rel, real, ancestors | {real}))
            elif e.is_dir(follow_symlinks=False):
                if e.name not in SKIP_DIRS:
                    real = os.path.join(real_dir, e.name)
                    stack.append((rel, real, ancestors | {real}))
            elif e.is_file(follow_symlinks=False):
                found.add(_checked_name(rel))
            else:
                raise DataError(f"{rel}: not a regular file (a FIFO, socket or device); expected a file")


def _checked_name(rel: str) -> str:
    """A path the lock can record: valid UTF-8, no backslash or newline."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = rel.encode("utf-8", "surrogateescape")
        raise DataError(f"{shown!r}: file name is not valid UTF-8; rename it") from None
    if "\\" in rel or "\n" in rel:
        raise DataError(f"{rel!r}: file name contains a backslash or newline, which the lock cannot record; rename it")
    return rel
