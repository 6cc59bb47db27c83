"""Content hashing of files and file trees. Never imports torch.

The root digest is defined in docs/lockfile.md: sha256 over the lines
``<sha256-hex>  <relative-posix-path>\\n`` for every file, sorted by the UTF-8
bytes of the path. That is `sha256sum`'s own output format, so anyone can check a
root digest with coreutils alone, and it does not depend on file system order,
the absolute location, or the platform's path separator.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from repro.errors import DataError, LockfileError

CHUNK = 1 << 20  # 1 MiB reads: large enough that hashlib, not Python, dominates.


@dataclass(frozen=True)
class FileDigest:
    """What the lock records for one file."""

    path: str  # relative POSIX path
    size: int
    sha256: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "hashes": {"sha256": self.sha256}}


def safe_relpath(rel: str, what: str = "path") -> PurePosixPath:
    """Reject paths that could read outside the root: absolute, `..`, or empty."""
    if not rel or "\\" in rel or "\n" in rel:
        raise LockfileError(f"{what} {rel!r}: expected a relative POSIX path")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or rel.startswith("~"):
        raise LockfileError(f"{what} {rel!r}: escapes the project root (absolute or '..')")
    return p


def resolve_under(root: Path, rel: str, what: str = "path") -> Path:
    """`root/rel`, after checking that it stays inside `root`, symlinks included."""
    safe = safe_relpath(rel, what)
    full = root.joinpath(*safe.parts)
    real_root = root.resolve()
    real = full.resolve()
    if real != real_root and real_root not in real.parents:
        raise LockfileError(f"{what} {rel!r}: resolves outside the project root")
    return full


def hash_file(path: Path) -> tuple[int, str]:
    """Stream a file through sha256 in 1 MiB chunks; return (size, hex digest).

    Raises DataError naming the path if it cannot be read, or if its size changed
    while it was being read (a file being written under us).
    """
    h = hashlib.sha256()
    try:
        before = os.stat(path)
        with open(path, "rb", buffering=0) as fh:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            size = 0
            while n := fh.readinto(buf):
                h.update(view[:n])
                size += n
        after = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied while reading") from None
    except IsADirectoryError:
        raise DataError(f"{path}: expected a file, found a directory") from None
    if size != after.st_size or before.st_mtime_ns != after.st_mtime_ns:
        raise DataError(f"{path}: changed while being hashed; retry when it is no longer written")
    return size, h.hexdigest()


def hash_files(root: Path, rel_paths: Sequence[str], workers: int | None = None,
               on_file: Callable[[FileDigest], None] | None = None) -> list[FileDigest]:
    """Hash many files with a bounded thread pool (hashlib releases the GIL).

    `on_file` is called with each digest as it completes (progress display).
    """
    workers = workers or min(8, (os.cpu_count() or 1) * 2)

    def one(rel: str) -> FileDigest:
        size, digest = hash_file(resolve_under(root, rel, "data file"))
        done = FileDigest(rel, size, digest)
        if on_file is not None:
            on_file(done)
        return done

    if len(rel_paths) <= 1:
        return [one(r) for r in rel_paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, rel_paths))


def root_digest(files: Iterable[FileDigest]) -> str:
    """The tree digest: sha256 of sorted `sha256sum`-style lines (see module doc)."""
    ordered = sorted(files, key=lambda f: f.path.encode("utf-8"))
    h = hashlib.sha256()
    for f in ordered:
        h.update(f"{f.sha256}  {f.path}\n".encode())
    return h.hexdigest()


def expand_patterns(root: Path, patterns: Iterable[str]) -> list[str]:
    """Expand files, directories (recursively) and globs under `root`.

    Returns sorted, unique relative POSIX paths of regular files. Symlinks to files
    are followed and recorded under the link's own path. A pattern that matches
    nothing is an error, so a typo cannot silently drop data from the lock.
    """
    root = Path(root)
    found: set[str] = set()
    for pattern in patterns:
        safe_relpath(pattern, "pattern")
        matches = sorted(glob.glob(pattern, root_dir=root, recursive=True))
        if not matches:
            raise DataError(f"{pattern}: no such file under {root.name or root}/ (expected a file, directory or glob)")
        for m in matches:
            full = root / m
            if full.is_dir():
                for dirpath, dirnames, filenames in os.walk(full, followlinks=False):
                    dirnames.sort()
                    for name in filenames:
                        found.add(_rel(root, Path(dirpath) / name))
            elif full.is_file():
                found.add(_rel(root, full))
    return sorted(found, key=lambda p: p.encode("utf-8"))


def _rel(root: Path, full: Path) -> str:
    rel = full.relative_to(root).as_posix()
    resolve_under(root, rel, "data file")
    return rel
