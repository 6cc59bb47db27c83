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
- Each row carries a checksum of its own fields; a row that fails it is a miss.
- A cache file SQLite cannot read is deleted and rebuilt, never trusted.
- A cache folder or file that is a symbolic link is refused (DataError), never followed.
- Two processes may share it: WAL journal, a busy timeout, one short
  transaction per batch. A cache that is locked for too long is skipped.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Sequence
from pathlib import Path

from repro.errors import DataError
from repro.safeio import printable
from repro.source.hashing import StatKey

CACHE_DIR = ".repro"
CACHE_NAME = "hashcache.sqlite"
SCHEMA = 1
RACY_NS = 2_000_000_000  # 2 s: covers coarse kernel clocks and 2 s FAT timestamps
_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_LOOKUP_BATCH = 500  # stays under SQLite's bound-parameter limit


def cache_path(root: Path) -> Path:
    """Where a project's cache lives: `$REPRO_CACHE_DIR` if set, else `<root>/.repro/`."""
    base = os.environ.get("REPRO_CACHE_DIR")
    return (Path(base) if base else Path(root) / CACHE_DIR) / CACHE_NAME


def _signed(v: int) -> int:
    """SQLite integers are signed 64-bit; inode and device numbers may not be."""
    return v - (1 << 64) if v >= (1 << 63) else v


def _check(path: str, key: StatKey, hashed_ns: int, digests: str) -> str:
    row = f"{path}\0{key.dev}\0{key.ino}\0{key.size}\0{key.mtime_ns}\0{key.ctime_ns}\0{hashed_ns}\0{digests}"
    return hashlib.blake2b(row.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


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
            db.execute(
                "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER,"
                " mtime_ns INTEGER, ctime_ns INTEGER, hashed_ns INTEGER, digests TEXT, chk TEXT) WITHOUT ROWID"
            )
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            (schema,) = db.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
            if schema != str(SCHEMA):
                db.execute("DELETE FROM files")
                db.execute("UPDATE meta SET v = ? WHERE k = 'schema'", (str(SCHEMA),))
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

    def lookup(self, keys: Sequence[tuple[str, StatKey]], algorithms: Sequence[str]) -> dict[str, dict[str, str]]:
        """Digests for the files whose stat key matches a sound, non-racy entry."""
        if self._db is None or not keys:
            return {}
        wanted = {path: key for path, key in keys}
        rows: list[tuple[str, int, int, int, int, int, int, str, str]] = []
        paths = list(wanted)
        try:
            for i in range(0, len(paths), _LOOKUP_BATCH):
                part = paths[i : i + _LOOKUP_BATCH]
                rows += self._db.execute(
                    "SELECT path, dev, ino, size, mtime_ns, ctime_ns, hashed_ns, digests, chk FROM files"
                    f" WHERE path IN ({','.join('?' * len(part))})", part).fetchall()
        except sqlite3.DatabaseError as exc:
            self._failed(exc)
            return {}
        found: dict[str, dict[str, str]] = {}
        for path, dev, ino, size, mtime_ns, ctime_ns, hashed_ns, digests, chk in rows:
            key = wanted[path]
            if (dev, ino, size, mtime_ns, ctime_ns) != (_signed(key.dev), _signed(key.ino), key.size,
                                                        key.mtime_ns, key.ctime_ns):
                continue
            if max(mtime_ns, ctime_ns) + RACY_NS > hashed_ns:
                continue  # racy: written too close to when it was hashed
            stored = StatKey(dev, ino, size, mtime_ns, ctime_ns)
            if chk != _check(path, stored, hashed_ns, digests):
                continue
            table = dict(item.partition("=")[::2] for item in digests.split(";"))
            if all(a in table for a in algorithms):
                found[path] = {a: table[a] for a in algorithms}
        self.hits += len(found)
        return found

    def store(self, records: Sequence[tuple[str, StatKey, dict[str, str]]], started_ns: int) -> None:
        """Remember fresh digests; `started_ns` is when hashing began (for the racy check)."""
        if self._db is None or not records:
            return
        rows = []
        for path, key, digests in records:
            signed = StatKey(_signed(key.dev), _signed(key.ino), key.size, key.mtime_ns, key.ctime_ns)
            text = ";".join(f"{a}={d}" for a, d in sorted(digests.items()))
            rows.append((path, *signed, started_ns, text, _check(path, signed, started_ns, text)))
        try:
            with self._db:  # one transaction: BEGIN ... COMMIT
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.DatabaseError as exc:
            self._failed(exc)

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
