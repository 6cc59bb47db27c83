"""Hash a large file with a reader thread one chunk ahead of the hasher. Never imports torch.

Copying a file out of the page cache costs about a fifth of what sha256 costs
(BENCHMARKS.md, "Data hashing"). Read and hashed in one thread, the two add up;
here `os.preadv` fills the next buffer on another core while hashlib digests this
one (both release the GIL), so one large file is hashed at about hashlib's
one-buffer speed. Small files gain nothing from it: they are hashed many at a
time by `repro.source.hashtree`'s pool instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from queue import SimpleQueue
from typing import Any

BUFFERS = 3  # one being read, one being hashed, one spare: memory stays 3 chunks whatever the size


def hash_with_readahead(fd: int, limit: int, hashers: Sequence[Any], chunk: int,
                        on_bytes: Callable[[int], None] | None) -> int:
    """Feed every byte of `fd`, from offset 0, to `hashers`; the number of bytes read.

    Stops early once more than `limit` bytes were read (the file grew while being
    read: the caller's stat check then reports it). An error in either thread is
    raised here, and the reader thread has always finished before this returns,
    so the caller may close `fd`.
    """
    free: SimpleQueue[bytearray] = SimpleQueue()
    full: SimpleQueue[tuple[bytearray, int] | BaseException] = SimpleQueue()
    for _ in range(BUFFERS):
        free.put(bytearray(chunk))
    stop = threading.Event()
    thread = threading.Thread(target=_read, args=(fd, limit, free, full, stop), name="repro-readahead", daemon=True)
    thread.start()
    size = 0
    try:
        while True:
            item = full.get()
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            if n == 0:
                break
            with memoryview(buf) as view:
                for h in hashers:
                    h.update(view[:n])
            size += n
            if on_bytes is not None:
                on_bytes(n)
            free.put(buf)
            if size > limit:
                break
    finally:
        stop.set()
        free.put(bytearray(0))  # wakes a reader waiting for a buffer: it reads 0 bytes and returns
        thread.join()
    return size


def _read(fd: int, limit: int, free: SimpleQueue[bytearray],
          full: SimpleQueue[tuple[bytearray, int] | BaseException], stop: threading.Event) -> None:
    """The reader thread: fill free buffers in file order until the end, `limit`, or `stop`."""
    total = 0
    try:
        while not stop.is_set():
            buf = free.get()
            n = os.preadv(fd, [buf], total)
            full.put((buf, n))
            total += n
            if n == 0 or total > limit:
                return
    except BaseException as exc:  # handed to the hashing thread, which raises it
        full.put(exc)
