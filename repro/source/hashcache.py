"""The stat cache: skip re-reading files whose stat has not changed. No torch.

Like DVC's state db, a digest is reused only when the file's device, inode,
size, mtime_ns and ctime_ns all match what they were when it was hashed. ctime
cannot be set from user space, so an edit that restores the mtime with `touch`
or `os.utime` still changes the key. What the key cannot see is a change that
leaves every stat field equal (a raw block-device write, a clock moved back, a
file system that does not keep ctime); `--rehash` and `repro verify` read every
byte for that reason.

Safety:
- "Racy" entries are not trusted: if the file's mtime or ctime was within
  RACY_NS of the moment hashing started, a later write in the same clock tick
  could leave the stat unchanged (git's "racy clean" problem), so the file is
  read again next time and the entry refreshed.
- Each row carries a CRC-32 of its own fields; a row that fails it is a miss.
- A cache file SQLite cannot read is deleted and rebuilt, never trusted.
- A cache folder or file that is a symbolic link is refused (DataError), never followed.
- Two processes may share it: WAL journal, a busy timeout, one short
  transaction per batch. A cache that is locked for too long is skipped.

Speed (a million files re-checked in seconds): a row is the path, the packed
stat key (`hashing.pack_key`), the raw sha256 and a checksum, and lookups scan
a range of paths in sorted order instead of probing one path at a time, so a
re-check costs one sequential pass over the rows it needs and memory stays
bounded by `_SCAN` paths at a time.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from repro.errors import DataError
from repro.safeio import printable
from repro.source.hashing import KEY_SIZE, StatKey, pack_key

CACHE_DIR = ".repro"
CACHE_NAME = "hashcache.sqlite"
SCHEMA = 3  # 3: CRC-32 row check; 2: packed stat key, raw sha256, range lookups; 1: hex text per row
RACY_NS = 2_000_000_000  # 2 s: covers coarse kernel clocks and 2 s FAT timestamps
_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_SCAN = 4096  # paths per range query: bounds memory, amortises the query
_MARGIN = struct.Struct("<q")

# One row: what must be unchanged (stat, packed), how long after its last change it was hashed
# (margin_ns, for the racy check), the digests, and a checksum binding them all to the path.
Row = tuple[str, bytes, int, bytes, str]  # path, stat, margin_ns, sha256 (raw), extra ("alg=hex;...")


def cache_path(root: Path) -> Path:
    """Where a project's cache lives: `$REPRO_CACHE_DIR` if set, else `<root>/.repro/`."""
    base = os.environ.get("REPRO_CACHE_DIR")
    return (Path(base) if base else Path(root) / CACHE_DIR) / CACHE_NAME


def _check(path: str, stat: bytes, margin_ns: int, sha256: bytes, extra: str,
           _crc: Callable[[bytes], int] = zlib.crc32, _join: Callable[[Iterable[bytes]], bytes] = b"\0".join,
           _pack: Callable[[int], bytes] = _MARGIN.pack) -> int:
    """CRC-32 of every field of a row: catches a damaged page, as ext4's and zip's CRCs do.

    Not a defence against a deliberate edit: whoever can write the cache can write
    a matching CRC (or the data itself). A damaged row must also still match the
    file's 40-byte stat key to be used. CRC-32 costs a third of a BLAKE2 here, which
    is a second at a million rows.
    """
    # The defaults bind the helpers as locals: a re-check runs this a million times.
    return _crc(_join((path.encode("utf-8", "surrogateescape"), stat, _pack(margin_ns), sha256, extra.encode())))


def _has(extra: str, wanted: Sequence[str]) -> bool:
    if not wanted:
        return True
    names = {item.partition("=")[0] for item in extra.split(";")}
    return all(a in names for a in wanted)


def margin(key: bytes, started_ns: int) -> int:
    """How long before `started_ns` the file last changed (negative: changed after)."""
    _, _, _, mtime_ns, ctime_ns = StatKey.unpack(key)
    return started_ns - max(mtime_ns, ctime_ns)


class HashCache:
    """A SQLite table of (path, stat key) -> digests. Use as a context manager.

    Never raises for cache trouble: it records a note and behaves as empty, so
    a broken cache can only cost time, never correctness.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.notes: list[str] = []
        self.hits = 0
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) in _CORRUPT or "not a database" in str(exc):
                self._discard(exc)
            else:
                self.notes.append(f"hash cache {self.path} unavailable ({exc}); hashing without it")
        except OSError as exc:
            self.notes.append(f"hash cache {self.path} unavailable ({exc.strerror}); hashing without it")

    def _open(self) -> sqlite3.Connection:
        refuse_links(self.path)
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            (self.path.parent / ".gitignore").write_text("# repro's local cache; never commit it\n*\n")
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            (schema,) = db.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
            if schema != str(SCHEMA):
                db.execute("DROP TABLE IF EXISTS files")
                db.execute("UPDATE meta SET v = ? WHERE k = 'schema'", (str(SCHEMA),))
            db.execute(
                "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, stat BLOB, margin_ns INTEGER,"
                " sha256 BLOB, extra TEXT, chk INTEGER) WITHOUT ROWID"
            )
        except BaseException:
            db.close()
            raise
        return db

    def _discard(self, exc: BaseException) -> None:
        """The file is not a sound SQLite database: delete it and start empty."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.notes.append(f"hash cache {self.path} was unreadable ({exc}); discarded it and rebuilt it")
        try:
            self._db = self._open()
        except (sqlite3.DatabaseError, OSError) as again:
            self._db = None
            self.notes.append(f"hash cache {self.path} unavailable ({again}); hashing without it")

    def _failed(self, exc: sqlite3.DatabaseError) -> None:
        if getattr(exc, "sqlite_errorcode", None) in _CORRUPT or "malformed" in str(exc):
            self._discard(exc)
        else:  # locked for longer than the timeout, disk full, ...: skip the cache this time
            self.notes.append(f"hash cache {self.path} skipped ({exc})")
            self.close()

    def matches(self, base: str, rels: Sequence[str], order: Sequence[int], keys: bytes | bytearray,
                algorithms: Sequence[str]) -> Iterator[tuple[int, bytes, str]]:
        """(i, raw sha256, extra) for each file `base/rels[i]` whose stat matches a sound, non-racy row.

        `order` lists the indices of `rels` in sorted order (Python's str order, which is
        SQLite's order for UTF-8 text); `keys` holds `pack_key` of each file's current
        stat, KEY_SIZE bytes per file in the order of `rels`.
        """
        wanted = [a for a in algorithms if a != "sha256"]
        for start in range(0, len(order), _SCAN):
            if self._db is None:
                return
            part = order[start : start + _SCAN]
            index = {f"{base}/{rels[i]}": i for i in part}
            first, last = f"{base}/{rels[part[0]]}", f"{base}/{rels[part[-1]]}"
            try:
                rows = self._db.execute(
                    "SELECT path, stat, margin_ns, sha256, extra, chk FROM files"
                    " WHERE path BETWEEN ? AND ? AND margin_ns >= ?", (first, last, RACY_NS)).fetchall()
            except UnicodeEncodeError:  # a name that is not UTF-8 cannot be a key: hash it
                continue
            except sqlite3.DatabaseError as exc:
                self._failed(exc)
                return
            for path, key, margin_ns, sha256, extra, chk in rows:
                i = index.get(path)
                if i is None or key != keys[i * KEY_SIZE : (i + 1) * KEY_SIZE]:
                    continue
                if chk != _check(path, key, margin_ns, sha256, extra) or (wanted and not _has(extra, wanted)):
                    continue
                self.hits += 1
                yield i, sha256, extra

    def put(self, rows: Iterable[Row]) -> None:
        """Remember fresh digests in one short transaction."""
        if self._db is None:
            return
        try:
            with self._db:  # one transaction: BEGIN ... COMMIT
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                                     ((*r, _check(*r)) for r in rows))
        except sqlite3.DatabaseError as exc:
            self._failed(exc)

    def store(self, records: Sequence[tuple[str, StatKey, dict[str, str]]], started_ns: int) -> None:
        """Remember digests given as hex; `started_ns` is when hashing began (for the racy check)."""
        rows = []
        for path, key, digests in records:
            packed = pack_key(key)
            extra = ";".join(f"{a}={d}" for a, d in sorted(digests.items()) if a != "sha256")
            rows.append((path, packed, margin(packed, started_ns), bytes.fromhex(digests["sha256"]), extra))
        self.put(rows)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def refuse_links(path: Path) -> None:
    """The cache folder, the database and its -wal/-shm files must not be links (nor odd files).

    A data tree is a stranger's: `.repro` linked to a folder elsewhere, or the
    database linked to another SQLite file, would have us delete or rewrite it.
    """
    for candidate in (path.parent, path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            st = os.lstat(candidate)
        except OSError:  # absent, or an unusable location: opening it fails later and is noted
            continue
        if stat.S_ISLNK(st.st_mode):
            raise DataError(f"{printable(str(candidate))}: the hash cache must not be a symbolic link; "
                            "remove it (repro rebuilds its cache)")
        want = stat.S_ISDIR if candidate == path.parent else stat.S_ISREG
        if not want(st.st_mode):
            raise DataError(f"{printable(str(candidate))}: expected a {'folder' if want is stat.S_ISDIR else 'file'} "
                            "for the hash cache")


def open_cache(root: Path) -> HashCache:
    """The project's cache (see `cache_path`)."""
    return HashCache(cache_path(root))
