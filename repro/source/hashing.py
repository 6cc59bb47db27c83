"""Content hashing of files and file trees. Never imports torch.

The root digest is defined in docs/lockfile.md ("Data"): sha256 over the lines
``<sha256-hex>  <relative-posix-path>\\n`` for every file, sorted by the UTF-8
bytes of the path. That is `sha256sum`'s own output format, so anyone can check a
root digest with coreutils alone, and it does not depend on file system order,
the absolute location, or the platform's path separator.

Speed: hashlib releases the GIL while it hashes, so a small pool of threads keeps
every core busy; small files are read with one `read` call, large ones stream in
1 MiB chunks through a per-thread buffer, so memory stays constant in file size.
An optional stat cache (`repro.source.hashcache`) lets unchanged files skip the read.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from repro.environment.machine import machine_cores
from repro.errors import ConfigError, DataError, LockfileError
from repro.source.filetree import (
    SKIP_DIRS,
    check_relpath,
    expand_patterns,
    inside,
    os_reason,
    resolve_under,
    safe_relpath,
)

# The path API lived here first; callers keep importing it from repro.source.hashing.
__all__ = [
    "CHUNK", "EXTRA_ALGORITHMS", "SKIP_DIRS", "FileDigest", "Hashed", "Progress", "StatCache", "StatKey",
    "check_algorithms", "default_workers", "digest_path", "expand_patterns", "hash_file", "hash_files",
    "resolve_under", "root_digest", "safe_relpath", "sha256_file",
]

CHUNK = 1 << 20  # 1 MiB reads: large enough that hashlib, not Python, dominates.
SEQUENTIAL_HINT = 8 << 20  # files at least this big get POSIX_FADV_SEQUENTIAL (more readahead)
BATCH_FILES, BATCH_BYTES = 64, 8 << 20  # one pool task: up to 64 small files or 8 MiB
# sha256 is always computed; these may be recorded beside it (config data.extra_hashes).
EXTRA_ALGORITHMS = ("blake2b", "blake2s", "blake3", "md5", "sha1", "sha3_256", "sha512")

OnBytes = Callable[[int], None]


class StatKey(NamedTuple):
    """What must be unchanged for a cached digest to be trusted (see repro.source.hashcache)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> StatKey:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Progress(Protocol):
    """Receives bytes and finished files from worker threads; must be thread-safe."""

    def start(self, total_bytes: int, total_files: int) -> None: ...

    def advance(self, nbytes: int, nfiles: int) -> None: ...


class StatCache(Protocol):
    """Digests remembered by (absolute path, StatKey); `repro.source.hashcache.HashCache` is one."""

    def lookup(self, keys: Sequence[tuple[str, StatKey]], algorithms: Sequence[str]) -> dict[str, dict[str, str]]: ...

    def store(self, records: Sequence[tuple[str, StatKey, dict[str, str]]], started_ns: int) -> None: ...


@dataclass(frozen=True)
class FileDigest:
    """What the lock records for one file. `extra` holds optional algorithms besides sha256."""

    path: str  # relative POSIX path
    size: int
    sha256: str
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def hashes(self) -> dict[str, str]:
        return {"sha256": self.sha256, **dict(self.extra)}

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "hashes": self.hashes}


class Hashed(NamedTuple):
    """One file's digests and the stat that held from before the first byte to after the last."""

    size: int
    digests: dict[str, str]
    key: StatKey


def check_algorithms(extra: Iterable[str]) -> tuple[str, ...]:
    """("sha256", *extra) in a fixed order; unknown or unavailable names are a ConfigError."""
    names = sorted(set(extra) - {"sha256"})
    for name in names:
        if name not in EXTRA_ALGORITHMS:
            raise ConfigError(f"config key data.extra_hashes: {name!r} is not one of {list(EXTRA_ALGORITHMS)}")
        if name == "blake3":
            try:
                import blake3  # noqa: F401
            except ImportError:
                raise ConfigError("config key data.extra_hashes: blake3 needs the `blake3` package") from None
    return ("sha256", *names)


def _hasher(name: str) -> Any:
    if name == "blake3":
        from blake3 import blake3

        return blake3()
    return hashlib.new(name)


_local = threading.local()


def _buffer() -> tuple[bytearray, memoryview]:
    """One reusable read buffer per thread, so memory does not grow with file size."""
    if not hasattr(_local, "buf"):
        _local.buf = bytearray(CHUNK)
        _local.view = memoryview(_local.buf)
    return _local.buf, _local.view


class _Cancelled(Exception):
    """Another file failed (or Ctrl-C): stop reading."""


class _Changed(Exception):
    """The file's size, timestamps or inode moved while we read it."""


def _read_once(path: str, algorithms: Sequence[str], on_bytes: OnBytes | None) -> Hashed:
    # O_NONBLOCK: opening a FIFO must fail fast below, not wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise IsADirectoryError if stat.S_ISDIR(before.st_mode) else _NotRegular
        hashers = [_hasher(a) for a in algorithms]
        if before.st_size < CHUNK:  # the common small file: one read, no buffer juggling
            data = os.read(fd, before.st_size + 1)
            for h in hashers:
                h.update(data)
            size = len(data)
            if on_bytes is not None:
                on_bytes(size)
        else:
            if before.st_size >= SEQUENTIAL_HINT and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            buf, view = _buffer()
            size = 0
            while n := os.readv(fd, [buf]):
                chunk = view[:n]
                for h in hashers:
                    h.update(chunk)
                size += n
                if on_bytes is not None:
                    on_bytes(n)
                if size > before.st_size:
                    break  # it grew while we read: stop now rather than chase a writer forever
        after = os.fstat(fd)
    finally:
        os.close(fd)
    key = StatKey.of(before)
    if size != before.st_size or StatKey.of(after) != key or StatKey.of(os.stat(path)) != key:
        raise _Changed
    return Hashed(size, {a: h.hexdigest() for a, h in zip(algorithms, hashers, strict=True)}, key)


class _NotRegular(Exception):
    pass


def digest_path(path: str | Path, algorithms: Sequence[str] = ("sha256",), on_bytes: OnBytes | None = None,
                shown: str | None = None) -> Hashed:
    """Hash one file with every algorithm in a single pass.

    A file whose size, mtime, ctime or inode moves while it is read is read once
    more; if it moves again this raises DataError. `shown` is the name used in
    errors (the relative path, when the caller has one).
    """
    name = shown or str(path)
    for attempt in (1, 2):
        try:
            return _read_once(str(path), algorithms, on_bytes)
        except _Changed:
            if attempt == 2:
                raise DataError(f"{name}: changed while being hashed, twice; hash it when nothing writes to it"
                                ) from None
        except OSError as exc:
            raise DataError(f"{name}: {os_reason(exc)}") from None
        except _NotRegular:
            raise DataError(f"{name}: not a regular file (a FIFO, socket or device); expected a file") from None
    raise AssertionError("unreachable")


def hash_file(path: Path, on_bytes: OnBytes | None = None) -> tuple[int, str]:
    """(size, sha256 hex) of one file; DataError naming the path if it cannot be read."""
    hashed = digest_path(path, ("sha256",), on_bytes)
    return hashed.size, hashed.digests["sha256"]


def sha256_file(path: Path) -> str:
    """The sha256 hex of one file, streamed (memory stays constant in file size); DataError if unreadable."""
    return hash_file(path)[1]


def default_workers() -> int:
    """One thread per usable core plus one, so a core is busy while another thread is in a syscall."""
    return max(1, min(16, machine_cores() + 1))


def _locate(root: Path, rel_paths: Sequence[str]) -> list[tuple[str, StatKey]]:
    """Absolute path and stat of every file, refusing anything outside `root`.

    One lstat per file; realpath only per distinct parent directory and per
    symlink, so checking 10,000 files costs milliseconds, not a realpath each.
    """
    base = str(root)
    real_root = os.path.realpath(base)
    parents: dict[str, str] = {}
    out = []
    for rel in rel_paths:
        check_relpath(rel, "data file")
        full = f"{base}/{rel}"
        parent, _, name = full.rpartition("/")
        if parent not in parents:
            parents[parent] = os.path.realpath(parent)
        try:
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(full)
                st = os.stat(full)
            else:
                real = f"{parents[parent]}/{name}"
        except OSError as exc:
            raise DataError(f"{rel}: {os_reason(exc)}") from None
        if not inside(real_root, real):
            raise LockfileError(f"data file {rel!r}: resolves outside the project root")
        if stat.S_ISDIR(st.st_mode):
            raise DataError(f"{rel}: expected a file, found a directory")
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{rel}: not a regular file (a FIFO, socket or device); expected a file")
        out.append((full, StatKey.of(st)))
    return out


def _batches(todo: list[int], sizes: list[int]) -> list[list[int]]:
    """Group file indices into pool tasks: big files alone, small ones together."""
    batches: list[list[int]] = []
    current: list[int] = []
    nbytes = 0
    for i in todo:
        if current and (len(current) >= BATCH_FILES or nbytes + sizes[i] > BATCH_BYTES):
            batches.append(current)
            current, nbytes = [], 0
        current.append(i)
        nbytes += sizes[i]
    if current:
        batches.append(current)
    return batches


def hash_files(
    root: Path,
    rel_paths: Sequence[str],
    workers: int | None = None,
    *,
    algorithms: Sequence[str] = ("sha256",),
    cache: StatCache | None = None,
    rehash: bool = False,
    progress: Progress | None = None,
    on_file: Callable[[FileDigest], None] | None = None,
) -> list[FileDigest]:
    """Hash many files under `root`; results are in the order of `rel_paths`.

    With `cache`, files whose stat is unchanged since they were last hashed are
    not read. `rehash=True` (or `cache=None`) reads every byte, as `--rehash` and
    `repro verify` need; fresh digests are stored in `cache` either way.
    `progress` gets bytes and files as they are read; `on_file` gets each digest
    as it is known (cached ones first). Both are called from worker threads.
    """
    import time

    root = Path(root)
    algos = check_algorithms(algorithms)
    started_ns = time.time_ns()
    located = _locate(root, rel_paths)
    known = cache.lookup(located, algos) if cache is not None and not rehash else {}
    results: list[Hashed | None] = [None] * len(located)
    for i, (full, key) in enumerate(located):
        if full in known:
            hit = results[i] = Hashed(key.size, known[full], key)
            if on_file is not None:
                on_file(_file_digest(rel_paths[i], hit))
    todo = [i for i, r in enumerate(results) if r is None]
    sizes = [key.size for _, key in located]
    if progress is not None:
        progress.start(sum(sizes[i] for i in todo), len(todo))

    stop = threading.Event()  # set on the first error or Ctrl-C: other threads stop mid-file

    def on_big(n: int) -> None:
        if stop.is_set():
            raise _Cancelled
        if progress is not None:
            progress.advance(n, 0)

    def run(batch: list[int]) -> None:
        big = len(batch) == 1 and sizes[batch[0]] >= CHUNK
        for i in batch:
            if stop.is_set():
                raise _Cancelled
            hashed = digest_path(located[i][0], algos, on_big if big else None, shown=rel_paths[i])
            results[i] = hashed
            if progress is not None:
                progress.advance(0 if big else hashed.size, 1)
            if on_file is not None:
                on_file(_file_digest(rel_paths[i], hashed))

    batches = _batches(todo, sizes)
    if len(batches) <= 1:
        for b in batches:
            run(b)
    else:
        with ThreadPoolExecutor(max_workers=min(workers or default_workers(), len(batches))) as pool:
            futures = [pool.submit(run, b) for b in batches]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                stop.set()
                for f in futures:
                    f.cancel()
                raise
    final = [r for r in results if r is not None]
    if len(final) != len(results):
        raise AssertionError("hash_files: a file was neither cached nor hashed")
    if cache is not None and todo:
        cache.store([(located[i][0], final[i].key, final[i].digests) for i in todo], started_ns)
    return [_file_digest(rel, r) for rel, r in zip(rel_paths, final, strict=True)]


def _file_digest(rel: str, hashed: Hashed) -> FileDigest:
    extra = tuple(sorted((a, d) for a, d in hashed.digests.items() if a != "sha256"))
    return FileDigest(rel, hashed.size, hashed.digests["sha256"], extra)


def root_digest(files: Iterable[FileDigest]) -> str:
    """The tree digest: sha256 of sorted `sha256sum`-style lines (see module doc)."""
    ordered = sorted(files, key=lambda f: f.path.encode("utf-8"))
    h = hashlib.sha256()
    for f in ordered:
        h.update(f"{f.sha256}  {f.path}\n".encode())
    return h.hexdigest()
