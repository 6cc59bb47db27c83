"""Canonical JSON and atomic writes: the two habits that keep files byte-stable.

Anything that gets hashed is written through here, so that two honest builds
produce the same bytes and a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from repro.errors import output_error


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, 2-space indent, trailing newline, UTF-8, no NaN.

    `allow_nan=False` because NaN is not JSON and would not round-trip.
    """
    text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def compact_json(obj: Any) -> bytes:
    """Canonical single-line JSON, used where the bytes are hashed, not read."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """The hex sha256 of these bytes: the one way repro names a blob's digest."""
    return hashlib.sha256(data).hexdigest()


def fsync_dir(path: Path) -> None:
    """Persist a rename: without this a power cut can forget the new name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename, fsync the folder.

    An OSError (no space, permission denied, read-only filesystem) becomes an
    OutputError naming the path; the temp file is removed, so the file of that
    name from before, if any, is left as it was.
    """
    with StagedFiles() as staged:
        staged.add(Path(path), data)


class StagedFiles:
    """Write several files so that all of them replace their earlier versions, or none does.

    `add` writes each file to a fsynced temp file beside its destination; leaving the
    `with` block renames them all into place (renames need no space), or, on any
    error, removes the temp files. So a full disk halfway through a build's outputs
    leaves the earlier weights, metrics and lock together, never a mix.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if exc is not None:
            self.discard()
            return
        try:
            for tmp, path in self._pending:
                os.replace(tmp, path)
            for folder in dict.fromkeys(path.parent for _, path in self._pending):
                fsync_dir(folder)
        except OSError as err:
            self.discard()
            raise output_error(err) from None
        self._pending = []

    def add(self, path: Path, data: bytes) -> None:
        """Write `data` to a temp file beside `path`, fsynced; renamed when the block ends."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            self._pending.append((Path(tmp), path))
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would hide released weights
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            raise output_error(err, path) from None

    def discard(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending = []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> bytes:
    """Write `obj` as canonical JSON atomically; return the bytes written."""
    data = canonical_json(obj)
    atomic_write_bytes(path, data)
    return data
