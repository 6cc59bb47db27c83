"""Hash one file: through a descriptor, in constant memory, checked against its stat. Never imports torch.

Every read goes through a reused per-thread buffer, in 1 MiB chunks, so memory
stays constant in file size, and no Python object is made per chunk. A large file
is read by a second thread while this one hashes (`repro.source.readahead`).
`repro.source.hashtree` hashes many files at once with these functions;
`repro.source.hashing.hash_files` is the way in for a list of files.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

from repro.environment.machine import machine_cores
from repro.errors import DataError, UserInputError
from repro.records import FileRecord, Hashes
from repro.safeio import Beneath, open_regular, printable
from repro.source.algorithms import new_hasher
from repro.source.filetree import os_reason
from repro.source.readahead import hash_with_readahead
from repro.source.statkey import STAT_KEY, StatKey, pack_key

CHUNK = 1 << 20  # 1 MiB reads: large enough that hashlib, not Python, dominates.
SEQUENTIAL_HINT = 8 << 20  # files at least this big get POSIX_FADV_SEQUENTIAL (more readahead)
READAHEAD_MIN = 32 << 20  # and from this size on, a reader thread (repro.source.readahead)
# A hashed file is read to its end in constant memory, so the cap bounds time, not memory: a stranger's
# sparse "terabyte" costs nothing to store and minutes to hash (docs/security.md, "Caps").
MAX_HASHED_BYTES = 1 << 40

OnBytes = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class FileDigest:
    """What the lock records for one file. `extra` holds optional algorithms besides sha256."""

    path: str  # relative POSIX path
    size: int
    sha256: str
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def hashes(self) -> dict[str, str]:
        return {"sha256": self.sha256, **dict(self.extra)}

    def to_json(self) -> FileRecord:
        # sha256 and the extra algorithms' keys: `Hashes` names only the one every record has.
        return {"path": self.path, "size": self.size, "hashes": cast(Hashes, self.hashes)}


class Hashed(NamedTuple):
    """One file's digests and the stat that held from before the first byte to after the last."""

    size: int
    digests: dict[str, str]
    key: StatKey


_local = threading.local()


def _buffer() -> tuple[bytearray, memoryview]:
    """One reusable read buffer per thread, so memory does not grow with file size."""
    if not hasattr(_local, "buf"):
        _local.buf = bytearray(CHUNK)
        _local.view = memoryview(_local.buf)
    return _local.buf, _local.view


class _Changed(Exception):
    """The file's size, timestamps or inode moved while we read it."""


class _NotRegular(Exception):
    pass


class _TooBig(Exception):
    pass


def check_cap(shown: str, size: int, cap: int = MAX_HASHED_BYTES) -> None:
    """DataError, before a byte is read, for a file over the cap on what repro hashes."""
    if size > cap:
        raise DataError(f"{shown}: {size:,} bytes is over the {cap:,}-byte cap on a file repro hashes")


def feed(fd: int, hashers: Sequence[Any], limit: int, on_bytes: OnBytes | None) -> int:
    """Feed `fd`'s bytes from offset 0 to every hasher, until its end or once past `limit`; bytes read.

    `preadv` into this thread's reused buffer: no Python object per chunk, and the
    descriptor's position is never used, so the same descriptor can be read again.
    A file at least READAHEAD_MIN long is read by a second thread while this one hashes.
    """
    buf, view = _buffer()
    if limit < CHUNK:  # the common small file: one read, which also sees growth up to CHUNK
        size = os.preadv(fd, [buf], 0)
        for h in hashers:
            h.update(view[:size])
        if on_bytes is not None:
            on_bytes(size)
        return size
    if limit >= READAHEAD_MIN and machine_cores() > 1:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return hash_with_readahead(fd, limit, hashers, CHUNK, on_bytes)
    if limit >= SEQUENTIAL_HINT and hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    size = 0
    while n := os.preadv(fd, [buf], size):
        chunk = view[:n]
        for h in hashers:
            h.update(chunk)
        size += n
        if on_bytes is not None:
            on_bytes(n)
        if size > limit:
            break  # it grew while we read: stop now rather than chase a writer forever
    return size


def _checked(fd: int, algorithms: Sequence[str], on_bytes: OnBytes | None, cap: int = MAX_HASHED_BYTES
             ) -> tuple[int, list[Any], bytes]:
    """One pass over an open file: (size, hashers fed every byte, packed stat key that held throughout).

    Regular files of at most `cap` bytes only (_NotRegular, IsADirectoryError,
    _TooBig otherwise); _Changed if the descriptor's size, timestamps or inode moved
    between the fstat before the first byte and the one after the last.
    """
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode):
        raise IsADirectoryError if stat.S_ISDIR(before.st_mode) else _NotRegular
    if before.st_size > cap:
        raise _TooBig(before.st_size, cap)
    hashers = [new_hasher(a) for a in algorithms]
    size = feed(fd, hashers, before.st_size, on_bytes)
    key = pack_key(before)
    if size != before.st_size or pack_key(os.fstat(fd)) != key:
        raise _Changed
    return size, hashers, key


def _attempts(shown: str, attempt: Callable[[], tuple[int, list[Any], bytes]]) -> tuple[int, list[Any], bytes]:
    """`attempt()`, once more if the file moved; DataError naming `shown` for the second move or any error."""
    for n in (1, 2):
        try:
            return attempt()
        except _Changed:
            if n == 2:
                raise DataError(f"{shown}: changed while being hashed, twice; hash it when nothing writes to it"
                                ) from None
        except OSError as exc:
            raise DataError(f"{shown}: {os_reason(exc)}") from None
        except _NotRegular:
            raise DataError(f"{shown}: not a regular file (a FIFO, socket or device); expected a file") from None
        except _TooBig as big:
            check_cap(shown, *big.args)
    raise AssertionError("unreachable")


def digest_fd(fd: int, algorithms: Sequence[str] = ("sha256",), shown: str = "file",
              on_bytes: OnBytes | None = None, cap: int = MAX_HASHED_BYTES) -> Hashed:
    """Hash a file through a descriptor the caller opened and checked (`safeio.open_regular`).

    The bytes hashed are the ones behind that very descriptor: nothing is opened
    again by name, so swapping the path for a link or another file after the check
    changes nothing (the time-of-check, time-of-use race). It must be a regular
    file of at most `cap` bytes (checked on the descriptor before a byte is read),
    and is read to the size that check saw. A file written to while it is read is
    read once more, from the start; a second change is a DataError.
    """
    size, hashers, key = _attempts(shown, lambda: _checked(fd, algorithms, on_bytes, cap))
    return Hashed(size, {a: h.hexdigest() for a, h in zip(algorithms, hashers, strict=True)}, StatKey.unpack(key))


def _by_name(path: str, algorithms: Sequence[str], on_bytes: OnBytes | None) -> tuple[int, list[Any], bytes]:
    # O_NONBLOCK: opening a FIFO must fail fast (its stat refuses it), not wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        size, hashers, key = _checked(fd, algorithms, on_bytes)
    finally:
        os.close(fd)
    if STAT_KEY.unpack(key)[:2] != STAT_KEY.unpack(pack_key(os.stat(path)))[:2]:
        raise _Changed  # the name now points at another file: replaced while we read it
    return size, hashers, key


def digest_path(path: str | Path, algorithms: Sequence[str] = ("sha256",), on_bytes: OnBytes | None = None,
                shown: str | None = None) -> Hashed:
    """Hash one named file with every algorithm in a single pass (a link to it is followed).

    For a file a stranger may swap, open and check it first and use `digest_fd`.
    A file whose size, mtime, ctime or inode moves while it is read, or whose name
    is pointed at another file meanwhile, is read once more; if it moves again this
    raises DataError. `shown` is the name used in errors.
    """
    size, hashers, key = _attempts(shown or str(path), lambda: _by_name(str(path), algorithms, on_bytes))
    return Hashed(size, {a: h.hexdigest() for a, h in zip(algorithms, hashers, strict=True)}, StatKey.unpack(key))


def read_beneath(opener: Beneath, folder_fd: int, folder: str, name: str, seen: bytes | bytearray,
                 algorithms: Sequence[str], on_bytes: OnBytes | None) -> tuple[int, list[Any], bytes]:
    """Hash the file `folder + name` of a walked tree, whose stat the walk took (`seen`, packed).

    The hot path of hashing a tree: one open beneath the root (no link followed,
    `repro.safeio.Beneath`), the bytes, and one `fstat` of that descriptor after
    the last byte. If that stat is the walk's (same inode, size, mtime and ctime),
    the bytes read are the file as the walk saw it, unchanged from before the open
    until after the read, and the walk already found it a regular file. Otherwise
    it was changed or replaced since: it is opened again and read as `digest_fd`
    reads (its own stat before and after), and a second change is a DataError.
    """
    shown = folder + name
    try:
        fd = opener.file(folder_fd, folder, name)
    except OSError as exc:
        raise DataError(f"{shown}: {os_reason(exc)}") from None
    try:
        hashers = [new_hasher(a) for a in algorithms]
        try:
            size = feed(fd, hashers, STAT_KEY.unpack(seen)[2], on_bytes)
        except OSError:
            size = -1  # a FIFO swapped in, or a failing disk: the stat below, or the second read, says which
        key = pack_key(os.fstat(fd))
    except OSError as exc:
        raise DataError(f"{shown}: {os_reason(exc)}") from None
    finally:
        os.close(fd)
    if key == seen and size == STAT_KEY.unpack(key)[2]:
        return size, hashers, key

    def again() -> tuple[int, list[Any], bytes]:
        fd = opener.file(folder_fd, folder, name)
        try:
            return _checked(fd, algorithms, on_bytes)
        finally:
            os.close(fd)

    return _attempts(shown, again)


def sha256_checked(path: str | Path, what: str, error: type[UserInputError] = UserInputError) -> str:
    """The sha256 of a file a stranger may swap: checked by `safeio.open_regular`, hashed through that descriptor.

    No final link followed, a regular file (an error naming `path` otherwise), and
    the path never opened again by name: a file swapped in after the check is
    never the one hashed (issue 29, item 10).
    """
    fd, _ = open_regular(path, what, error)
    try:
        return digest_fd(fd, shown=printable(str(path))).digests["sha256"]
    finally:
        os.close(fd)


def hash_file(path: Path, on_bytes: OnBytes | None = None) -> tuple[int, str]:
    """(size, sha256 hex) of one file; DataError naming the path if it cannot be read."""
    hashed = digest_path(path, ("sha256",), on_bytes)
    return hashed.size, hashed.digests["sha256"]


def sha256_file(path: Path) -> str:
    """The sha256 hex of one file, streamed (memory stays constant in file size); DataError if unreadable."""
    return hash_file(path)[1]
