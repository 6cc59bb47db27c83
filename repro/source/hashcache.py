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
- Each row carries a CRC-32 of its own record; a row that fails it is a miss.
- A cache file SQLite cannot read is deleted and rebuilt, never trusted.
- A cache folder or file that is a symbolic link is refused (DataError), never followed.
- Two processes may share it: WAL journal, a busy timeout, one short
  transaction per batch. A cache that is locked for too long is skipped.
- It is never fsync'ed (`synchronous=OFF`): a power cut may lose rows, which
  only costs a re-read, since no row is believed without its checks.

A `.repro/` folder can come with a stranger's release (docs/security.md), so the
database is never trusted to be one that repro wrote:
- its schema must be exactly repro's two tables: a trigger, a view, an index or
  any other table (anything that could run SQL of the stranger's choosing when
  repro reads or writes a row) and the file is discarded and rebuilt, before any
  row is read or written; `trusted_schema` is off besides;
- every statement runs under a watchdog (STATEMENT_SECONDS), so no database,
  however built, can stall a command: past it, the cache is skipped;
- no value longer than MAX_VALUE_BYTES is ever handed back (SQLite's length
  limit): a giant row is an error, and the file is discarded and rebuilt at the
  first one met; a file over MAX_CACHE_BYTES is discarded before it is opened,
  which bounds what giant keys compared during a seek can cost;
- a row is used only when its stat key matches the file's own, and a stranger
  cannot know the device, inode and nanosecond ctime a file gets when it is
  unpacked on this machine, so a shipped row can never be a hit.

Speed (a million files re-checked in seconds): a row is the path and one record
(`_Record`: stat key, racy margin, raw sha256, extra digests, CRC-32), and the
cache is read a sorted range of paths at a time. When a range's rows are exactly
the files asked for, in order, its keys are compared as one byte string and its
records checked with C-level maps, not a Python step per row; a range that does
not line up (a new, removed or racy file) is checked row by row. Memory stays
bounded by `_SCAN` paths at a time.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path

from repro.errors import DataError
from repro.filenames import REPRO_DIR
from repro.safeio import printable
from repro.source.statkey import KEY_SIZE, StatKey, pack_key

CACHE_DIR = REPRO_DIR
CACHE_NAME = "hashcache.sqlite"
SCHEMA = 4  # 4: one checked record per row, schema verified; 3: CRC-32 row check; 2: packed stat key; 1: hex text
RACY_NS = 2_000_000_000  # 2 s: covers coarse kernel clocks and 2 s FAT timestamps
STATEMENT_SECONDS = 2.0  # one statement's budget; a legitimate one takes milliseconds
# A row repro writes is a path (PATH_MAX is 4 KiB) and a record of 84 bytes plus a few extra digests. SQLite
# refuses to hand back any value longer than this (SQLITE_TOOBIG), so a shipped cache with a giant row costs
# neither the memory nor the time of reading it: it is discarded like a damaged one.
MAX_VALUE_BYTES = 64 << 10
# SQLite compares whole keys while it seeks, and a WITHOUT ROWID row is its key: a giant row on the path of a
# seek is read whole before any value is refused. The file's size bounds what that can cost (a 1 GB row: 2.2 s
# and 1 GB of memory, measured, once: the file is then discarded). A cache of five million files (about 200
# bytes a row) is still smaller; a larger file is discarded before it is opened.
MAX_CACHE_BYTES = 1 << 30
_CORRUPT = {11, 18, 26}  # SQLITE_CORRUPT, SQLITE_TOOBIG (a value over MAX_VALUE_BYTES), SQLITE_NOTADB
_SCAN = 4096  # paths per range query: bounds memory, amortises the query
_TABLES = (
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE files (path TEXT PRIMARY KEY, rec BLOB NOT NULL) WITHOUT ROWID",
)
# Everything sqlite_master may hold: repro's two tables and the index SQLite makes for meta's key.
_SCHEMA_ROWS = sorted([("table", "meta", "meta", _TABLES[0]), ("index", "sqlite_autoindex_meta_1", "meta", None),
                       ("table", "files", "files", _TABLES[1])], key=repr)

# One row's record: the stat key that must still hold, how long after its last change the file was hashed
# (margin_ns, for the racy check), the raw sha256, the extra digests ("alg=hex;..."), and a CRC-32 of all of
# it. The CRC's little-endian bytes make the CRC of the whole record a constant, so a range of records is
# checked with one map over C functions.
_MARGIN = struct.Struct("<q")
_SHA_AT = KEY_SIZE + _MARGIN.size
_FIXED = _SHA_AT + 32
_RESIDUE = 0x2144DF1C  # crc32(data + crc32(data) as 4 little-endian bytes), for any data
_KEYS, _MARGINS, _SHAS = itemgetter(slice(0, KEY_SIZE)), itemgetter(slice(KEY_SIZE, _SHA_AT)), itemgetter(
    slice(_SHA_AT, _FIXED))
_FIRST = itemgetter(0)

Row = tuple[str, bytes, int, bytes, str]  # path, stat, margin_ns, sha256 (raw), extra ("alg=hex;...")
Hits = tuple[Sequence[int], bytes, list[str] | None]  # indices, their sha256s end to end, extras (if asked)


def cache_path(root: Path) -> Path:
    """Where a project's cache lives: `$REPRO_CACHE_DIR` if set, else `<root>/.repro/`."""
    base = os.environ.get("REPRO_CACHE_DIR")
    return (Path(base) if base else Path(root) / CACHE_DIR) / CACHE_NAME


def record(key: bytes, margin_ns: int, sha256: bytes, extra: str) -> bytes:
    """One row's record (see above): the fields, then the CRC-32 that makes them checkable in bulk.

    Not a defence against a deliberate edit: whoever can write the cache can write
    a matching CRC (or the data itself). It catches a damaged page, as ext4's and
    zip's CRCs do; a damaged row must also still match the file's 40-byte stat key.
    """
    body = key + _MARGIN.pack(margin_ns) + sha256 + extra.encode()
    return body + zlib.crc32(body).to_bytes(4, "little")


def _sound(rec: bytes) -> bool:
    return len(rec) >= _FIXED + 4 and zlib.crc32(rec) == _RESIDUE


def _extra(rec: bytes) -> str:
    return rec[_FIXED:-4].decode()


def _has(extra: str, wanted: Sequence[str]) -> bool:
    if not wanted:
        return True
    names = {item.partition("=")[0] for item in extra.split(";")}
    return all(a in names for a in wanted)


def margin(key: bytes, started_ns: int) -> int:
    """How long before `started_ns` the file last changed (negative: changed after)."""
    _, _, _, mtime_ns, ctime_ns = StatKey.unpack(key)
    return started_ns - max(mtime_ns, ctime_ns)


class _Foreign(Exception):
    """The database holds something repro never creates (a trigger, a view, another table) or another schema."""


class _Timeout(sqlite3.OperationalError):
    pass


class HashCache:
    """A SQLite table of (path, stat key) -> digests. Use as a context manager.

    Never raises for cache trouble: it records a note and behaves as empty, so
    a broken or hostile cache can only cost time, never correctness.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.notes: list[str] = []
        self.hits = 0
        self._db: sqlite3.Connection | None = None
        self._deadline = 0.0
        try:
            self._db = self._open()
        except (_Foreign, _Timeout) as exc:  # not repro's, or too slow to be: never trusted, rebuilt
            self._discard(exc)
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) in _CORRUPT or "not a database" in str(exc):
                self._discard(exc)
            else:
                self.notes.append(f"hash cache {self.path} unavailable ({exc}); hashing without it")
        except OSError as exc:
            self.notes.append(f"hash cache {self.path} unavailable ({exc.strerror}); hashing without it")

    def _open(self) -> sqlite3.Connection:
        refuse_links(self.path)
        size = sum(os.stat(p).st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        if size > MAX_CACHE_BYTES:
            raise _Foreign(f"{size:,} bytes, over the {MAX_CACHE_BYTES:,}-byte cap on a hash cache")
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            (self.path.parent / ".gitignore").write_text("# repro's local cache; never commit it\n*\n")
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            # Before anything reads a row: a watchdog on every statement, and no functions with side effects
            # from the schema; then the schema itself is checked (or made, when the file is new).
            db.set_progress_handler(self._overdue, 10_000)
            db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
            self._run(db, "PRAGMA trusted_schema=OFF")
            self._run(db, "PRAGMA cell_size_check=ON")
            # No fsync, ever: that cost 20-45 ms of a 0.5 s run (creating the file, and the checkpoint at close).
            # A cache may lose rows in a power cut; every row is checked (CRC, stat key) before it is
            # believed, so a lost or torn write is a miss or a discarded file, never a wrong digest.
            self._run(db, "PRAGMA synchronous=OFF")
            if not self._schema(db):
                self._create(db)
        except BaseException:
            db.close()
            raise
        return db

    def _schema(self, db: sqlite3.Connection) -> bool:
        """True when the database is repro's own, of this SCHEMA; False when empty; _Foreign otherwise."""
        found = sorted(self._run(db, "SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall(), key=repr)
        if not found:
            return False
        if found != _SCHEMA_ROWS:
            kinds = sorted({f"{kind} {printable(str(name))}" for kind, name, _, _ in found} -
                           {f"{kind} {name}" for kind, name, _, _ in _SCHEMA_ROWS})
            raise _Foreign(f"not repro's schema: {', '.join(kinds) or 'other table definitions'}")
        version = self._run(db, "SELECT v FROM meta WHERE k = 'schema'").fetchall()
        if version != [(str(SCHEMA),)]:
            raise _Foreign(f"schema {printable(str(version[0][0]) if version else 'unknown')}, not {SCHEMA}")
        return True

    def _create(self, db: sqlite3.Connection) -> None:
        """Make the tables in one transaction (another process may be doing the same)."""
        self._run(db, "PRAGMA journal_mode=WAL")
        self._run(db, "BEGIN IMMEDIATE")
        try:
            if not self._schema(db):  # still empty now that we hold the write lock
                for sql in _TABLES:
                    self._run(db, sql)
                self._run(db, "INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            self._run(db, "COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _overdue(self) -> int:
        """SQLite's progress handler: non-zero interrupts the statement that has run past its budget."""
        return 1 if time.monotonic() > self._deadline else 0

    def _run(self, db: sqlite3.Connection, sql: str, args: Sequence[object] = ()) -> sqlite3.Cursor:
        self._deadline = time.monotonic() + STATEMENT_SECONDS
        try:
            return db.execute(sql, args)
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise _Timeout(f"a statement ran past {STATEMENT_SECONDS:g} s") from None
            raise

    def _discard(self, exc: BaseException) -> None:
        """The file is not a sound SQLite database of repro's: delete it and start empty."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.notes.append(f"hash cache {self.path} was unusable ({printable(str(exc))}); discarded it and rebuilt it")
        try:
            self._db = self._open()
        except (sqlite3.DatabaseError, OSError, _Foreign) as again:
            self._db = None
            self.notes.append(f"hash cache {self.path} unavailable ({again}); hashing without it")

    def _failed(self, exc: sqlite3.DatabaseError) -> None:
        if getattr(exc, "sqlite_errorcode", None) in _CORRUPT or "malformed" in str(exc) or "too big" in str(exc):
            self._discard(exc)
        else:  # locked for longer than the timeout, disk full, a statement past its budget: skip the cache
            self.notes.append(f"hash cache {self.path} skipped ({exc})")
            self.close()

    def _range(self, columns: str, first: str, last: str) -> list[tuple[object, ...]] | None:
        """Rows of `files` with first <= path <= last, in path order; None once the cache failed."""
        if self._db is None:
            return None
        try:
            return self._run(self._db, f"SELECT {columns} FROM files WHERE path BETWEEN ? AND ? ORDER BY path",
                             (first, last)).fetchall()
        except sqlite3.DatabaseError as exc:
            self._failed(exc)
            return None

    def lookup(self, base: str, rels: Sequence[str], order: Sequence[int], keys: bytes | bytearray,
               algorithms: Sequence[str]) -> Iterator[Hits]:
        """The files `base/rels[i]` whose stat matches a sound, non-racy row: (indices, sha256s, extras).

        `order` lists the indices of `rels` in sorted order (Python's str order, which is
        SQLite's order for UTF-8 text); `keys` holds `pack_key` of each file's current
        stat, KEY_SIZE bytes per file in the order of `rels`. Extras (each hit's
        "alg=hex;..." text) are given only when `algorithms` asks for more than sha256.
        """
        wanted = [a for a in algorithms if a != "sha256"]
        for start in range(0, len(order), _SCAN):
            part = order[start : start + _SCAN]
            try:
                first, last = f"{base}/{rels[part[0]]}", f"{base}/{rels[part[-1]]}"
                first.encode(), last.encode()
            except UnicodeEncodeError:  # a name that is not UTF-8 cannot be a key: hash it
                continue
            if not wanted:
                rows = self._range("rec", first, last)
                if rows is None:
                    return
                shas = _in_bulk(rows, part, keys)
                if shas is not None:
                    self.hits += len(part)
                    yield part, shas, None
                    continue
            yield from self._each(base, rels, part, keys, wanted, first, last)

    def _each(self, base: str, rels: Sequence[str], part: Sequence[int], keys: bytes | bytearray,
              wanted: Sequence[str], first: str, last: str) -> Iterator[Hits]:
        """A range that does not line up with the rows (new, removed, racy or repeated files): row by row."""
        rows = self._range("path, rec", first, last)
        if rows is None:
            return
        index = {f"{base}/{rels[i]}": i for i in part}
        for path, rec in rows:
            i = index.get(path)  # type: ignore[call-overload]
            if i is None or not isinstance(rec, bytes) or not _sound(rec):
                continue
            if rec[:KEY_SIZE] != keys[i * KEY_SIZE : (i + 1) * KEY_SIZE]:
                continue
            if _MARGIN.unpack_from(rec, KEY_SIZE)[0] < RACY_NS or (wanted and not _has(_extra(rec), wanted)):
                continue
            self.hits += 1
            yield (i,), rec[_SHA_AT:_FIXED], [_extra(rec)] if wanted else None

    def put(self, rows: Iterable[Row]) -> None:
        """Remember fresh digests in one short transaction."""
        if self._db is None:
            return
        try:
            self._run(self._db, "BEGIN IMMEDIATE")
            try:
                self._deadline = time.monotonic() + STATEMENT_SECONDS
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?)",
                                     [(path, record(key, m, sha, extra)) for path, key, m, sha, extra in rows])
                self._run(self._db, "COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            self._failed(exc)
        except UnicodeEncodeError:  # a path that is not UTF-8: it could never be looked up anyway
            pass

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


def _in_bulk(rows: list[tuple[object, ...]], part: Sequence[int], keys: bytes | bytearray) -> bytes | None:
    """The sha256s of a range whose rows are exactly `part`'s files, in order, all sound and matching; else None.

    One comparison of the joined stat keys and C-level maps over the records: no
    Python step per row. Rows that are not the files asked for (a removed file's
    row, a new file without one) make the lengths or the keys differ.
    """
    if len(rows) != len(part):
        return None
    recs: list[bytes] = list(map(_FIRST, rows))
    if not all(map(bytes.__instancecheck__, recs)) or set(map(zlib.crc32, recs)) != {_RESIDUE}:
        return None
    if isinstance(part, range) and part.step == 1:
        ours = keys[part.start * KEY_SIZE : part.stop * KEY_SIZE]
    else:
        ours = b"".join([keys[i * KEY_SIZE : (i + 1) * KEY_SIZE] for i in part])
    if b"".join(map(_KEYS, recs)) != ours or min(map(len, recs)) < _FIXED + 4:
        return None
    margins = array("q", b"".join(map(_MARGINS, recs)))
    if sys.byteorder == "big":
        margins.byteswap()
    if min(margins) < RACY_NS:
        return None
    return b"".join(map(_SHAS, recs))


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
