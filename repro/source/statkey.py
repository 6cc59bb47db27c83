"""The stat key: what must be unchanged for a cached digest to be trusted. Never imports torch.

Five numbers of a file's stat (device, inode, size, mtime and ctime in ns), packed
into KEY_SIZE bytes. The walk (`repro.source.walk`) and `repro.source.locate` take
it, `repro.source.hashfile` checks it held while a file was read, and the stat
cache (`repro.source.hashcache`) stores and compares it; a checkpoint's tensor
files are checked against it too (`repro.train.checkpoint`).
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple


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

    @classmethod
    def unpack(cls, packed: bytes | bytearray) -> StatKey:
        return cls(*STAT_KEY.unpack(packed))


STAT_KEY = struct.Struct("<QQqqq")  # dev, ino (unsigned), size, mtime_ns, ctime_ns
KEY_SIZE = STAT_KEY.size


def pack_key(key: StatKey | os.stat_result) -> bytes:
    """A StatKey (or the stat it comes from) as KEY_SIZE bytes: how the stat cache stores and compares it."""
    if isinstance(key, os.stat_result):
        return STAT_KEY.pack(key.st_dev, key.st_ino, key.st_size, key.st_mtime_ns, key.st_ctime_ns)
    return STAT_KEY.pack(*key)
