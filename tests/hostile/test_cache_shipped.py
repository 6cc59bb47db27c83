# ruff: noqa: F811  (pytest fixtures imported from hostile_helpers are parameters here)
"""Issue 29, item 6: a `.repro/` cache that came with a release is never trusted.

It is opened only after its schema is checked: anything but repro's own two
tables (a view, another table, another schema version, garbage) and the file is
discarded and rebuilt before a row is read. A cache in repro's own schema whose
rows lie cannot be believed either: a row counts only when its stat key is the
file's own on this machine (device, inode, size, mtime and the nanosecond ctime
the file got when it was unpacked here), which a stranger cannot know. Each case
asserts the documented exit code, the true digest, a run of seconds, and,
through `guard`, that nothing outside the root was read or written.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from hostile_helpers import Guard, Outcome, guard, no_hang, project, trained  # noqa: F401

from repro.source import hashcache
from repro.source.statkey import pack_key

DATA = "repro/examples/digits/digits.csv"
LIE = hashlib.sha256(b"the attacker's bytes").digest()


def _fresh_db(project: Path) -> Path:
    folder = project / ".repro"
    folder.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        (folder / f"{hashcache.CACHE_NAME}{suffix}").unlink(missing_ok=True)
    return folder / hashcache.CACHE_NAME


def _sql(db: Path, *statements: str, schema: str = str(hashcache.SCHEMA)) -> None:
    with sqlite3.connect(db) as raw:
        for sql in statements:
            raw.execute(sql)
        if "CREATE TABLE meta" in " ".join(statements):
            raw.execute("INSERT INTO meta VALUES ('schema', ?)", (schema,))
    raw.close()


SHAPES = {
    "a view": lambda db: _sql(db, hashcache._TABLES[0], "CREATE VIEW files AS SELECT 'x' AS path, x'00' AS rec"),
    "another table": lambda db: _sql(db, *hashcache._TABLES, "CREATE TABLE extra (x)"),
    "an index": lambda db: _sql(db, *hashcache._TABLES, "CREATE INDEX ix ON files (rec)"),
    "another schema version": lambda db: _sql(db, *hashcache._TABLES, schema="999"),
    "an older repro's table": lambda db: _sql(db, hashcache._TABLES[0], "CREATE TABLE files (path TEXT PRIMARY KEY,"
                                              " stat BLOB, margin_ns INTEGER, sha256 BLOB, extra TEXT, chk INTEGER)"
                                              " WITHOUT ROWID"),
    "not a database": lambda db: db.write_bytes(b"SQLite format 3\0" + os.urandom(4000)),
}
GIANT = 64 << 20  # far over MAX_VALUE_BYTES; SQLite itself allows a row of up to 1 GB


def hashed(r: Outcome) -> str:
    return next(line.split()[0] for line in r.out.splitlines() if line.endswith("digits.csv"))




@pytest.mark.parametrize("shape", SHAPES)
def test_a_shipped_cache_of_another_shape_is_discarded_before_any_row_is_read(project: Path, guard: Guard,
                                                                              shape: str) -> None:
    db = _fresh_db(project)
    SHAPES[shape](db)
    r = guard.run("hash", "--root", str(project), str(project / DATA))
    assert r.code == 0, r.err
    assert hashed(r) == hashlib.sha256((project / DATA).read_bytes()).hexdigest()
    assert "discarded it and rebuilt it" in r.err
    with sqlite3.connect(db) as raw:  # and what is there now is repro's own
        assert sorted(raw.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"), key=repr) == \
            hashcache._SCHEMA_ROWS
    raw.close()
    r = guard.run("verify", "--inputs-only", "--quiet", str(project / "out" / "repro.lock"))
    assert r.code == 0, r.text


def test_shipped_rows_that_lie_are_never_hits(project: Path, guard: Guard) -> None:
    """repro's own schema, rows for this very path with a lie, under the stat key the file had where it was packed.

    The stranger can write a sound row (the CRC is not a signature) for the path the
    victim will unpack to, but not the inode and ctime the file gets on the
    victim's machine: the copy made here stands in for that unpacking.
    """
    target = project / DATA
    packed_key = pack_key(os.stat(target))  # the file as it was on the packer's machine
    copy = target.with_name("copy.tmp")
    copy.write_bytes(target.read_bytes())
    os.replace(copy, target)  # as unpacked here: same bytes, a new inode and ctime
    assert pack_key(os.stat(target)) != packed_key
    db = _fresh_db(project)
    _sql(db, *hashcache._TABLES)
    with sqlite3.connect(db) as raw:
        raw.execute("INSERT INTO files VALUES (?, ?)",
                    (str(target), hashcache.record(packed_key, 10 * hashcache.RACY_NS, LIE, "")))
    raw.close()
    r = guard.run("hash", "--root", str(project), str(target))
    assert r.code == 0, r.err
    assert hashed(r) == hashlib.sha256(target.read_bytes()).hexdigest() != LIE.hex()
    assert "0 unchanged (stat cache)" in r.err
    r = guard.run("verify", "--inputs-only", "--quiet", str(project / "out" / "repro.lock"))
    assert r.code == 0, r.text


def _giant_rows(db: Path, target: Path, key: bool) -> None:
    """repro's own schema and sound rows, plus one giant row: a giant record for `target`, or a giant key beside it."""
    _sql(db, *hashcache._TABLES)
    with sqlite3.connect(db) as raw:
        raw.execute("INSERT INTO files VALUES (?, ?)", (f"{target}.a", hashcache.record(b"\0" * 40, 0, LIE, "")))
        if key:  # sorts right after the file's own path: a seek for that path compares against it
            raw.execute("INSERT INTO files VALUES (? || zeroblob(?), x'00')", (str(target), GIANT))
        else:  # the file's own path: its record is what a lookup reads
            raw.execute("INSERT INTO files VALUES (?, zeroblob(?))", (str(target), GIANT))
    raw.close()


@pytest.mark.parametrize("where", ["record", "key"])
def test_a_shipped_cache_with_a_giant_row_is_never_read_into_memory_or_trusted(project: Path, guard: Guard,
                                                                               where: str) -> None:
    """A 64 MiB row: SQLite refuses to hand back any value over MAX_VALUE_BYTES, so the file is discarded.

    A giant key is compared during a seek without being handed back: it costs one
    read, bounded by the cap on the file's size, and is never a hit.
    """
    target = project / DATA
    db = _fresh_db(project)
    _giant_rows(db, target, key=where == "key")
    assert db.stat().st_size > GIANT
    r = guard.run("hash", "--root", str(project), str(target))
    assert r.code == 0, r.err
    assert hashed(r) == hashlib.sha256(target.read_bytes()).hexdigest()
    assert "0 unchanged (stat cache)" in r.err
    if where == "record":
        assert "discarded it and rebuilt it" in r.err and "too big" in r.err, r.err
        assert db.stat().st_size < GIANT
    r = guard.run("verify", "--inputs-only", "--quiet", str(project / "out" / "repro.lock"))
    assert r.code == 0, r.text


def test_a_shipped_cache_over_the_size_cap_is_discarded_before_it_is_opened(project: Path, guard: Guard,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever it holds: SQLite is never asked to read it (the cap bounds what a seek past giant keys costs)."""
    monkeypatch.setattr(hashcache, "MAX_CACHE_BYTES", 1 << 20)
    db = _fresh_db(project)
    _sql(db, *hashcache._TABLES, "CREATE TABLE pad (x)", "INSERT INTO pad VALUES (zeroblob(2000000))")
    r = guard.run("hash", "--root", str(project), str(project / DATA))
    assert r.code == 0, r.err
    assert hashed(r) == hashlib.sha256((project / DATA).read_bytes()).hexdigest()
    assert "over the 1,048,576-byte cap on a hash cache" in r.err and "discarded it and rebuilt it" in r.err, r.err
    assert db.stat().st_size < 1 << 20
