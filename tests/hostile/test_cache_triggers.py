# ruff: noqa: F811  (pytest fixtures imported from hostile_helpers are parameters here)
"""Issue 29, item 11: a shipped `.repro/hashcache.sqlite` that runs SQL of its own must not stall anything.

The release ships a stat cache with repro's own two tables plus a payload: a
trigger whose body is a runaway recursive query (it would run for ever on the
first row repro files), a view of that query named like a table repro reads, or
a trigger that records that it ran in a `marker` table. `hash`, `verify
--inputs-only` and `verify` must each finish in seconds with their documented
exit code, run no payload (no marker row anywhere), discard the database, and,
through `guard`, read and write nothing outside the project root.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hostile_helpers import Guard, Outcome, guard, no_hang, project, trained  # noqa: F401

from repro.source import hashcache

RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"
PAYLOADS = {
    # fires on the first row repro files (every command files fresh digests)
    "insert-trigger": ["CREATE TABLE marker (x)",
                       f"CREATE TRIGGER bomb AFTER INSERT ON files BEGIN INSERT INTO marker SELECT count(*) "
                       f"FROM ({RUNAWAY}); END"],
    # INSERT OR REPLACE of an existing row deletes it first
    "delete-trigger": ["CREATE TABLE marker (x)",
                       f"CREATE TRIGGER bomb BEFORE DELETE ON files BEGIN INSERT INTO marker SELECT count(*) "
                       f"FROM ({RUNAWAY}); END"],
    # a trigger that re-inserts into its own table: recursive, were recursive_triggers on
    "recursive-trigger": ["CREATE TABLE marker (x)",
                          "CREATE TRIGGER again AFTER INSERT ON files BEGIN INSERT INTO marker VALUES (1); "
                          "INSERT OR REPLACE INTO files SELECT path || '+', rec FROM files; END"],
    # a lookup reads `files`: here a view of a query that never ends (repro's table is then absent)
    "runaway-view": ["CREATE TABLE marker (x)", f"CREATE VIEW files AS SELECT x AS path, x AS rec FROM ({RUNAWAY})"],
}


def ship(project: Path, payload: list[str]) -> Path:
    """The release's `.repro/hashcache.sqlite`: repro's schema (meta at this SCHEMA) plus the payload."""
    folder = project / ".repro"
    folder.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        (folder / f"{hashcache.CACHE_NAME}{suffix}").unlink(missing_ok=True)
    db = folder / hashcache.CACHE_NAME
    with sqlite3.connect(db) as raw:
        tables = hashcache._TABLES if not any("VIEW files" in s for s in payload) else hashcache._TABLES[:1]
        for sql in tables:
            raw.execute(sql)
        raw.execute("INSERT INTO meta VALUES ('schema', ?)", (str(hashcache.SCHEMA),))
        if "CREATE TABLE files" in tables[-1]:  # a row for repro to replace (a DELETE, then an INSERT)
            raw.execute("INSERT INTO files VALUES (?, ?)", (str(project / "repro/examples/digits/digits.csv"),
                                                            b"\0" * 84))
        for sql in payload:  # last: the payload must not fire while it is being built
            raw.execute(sql)
    raw.close()
    return db


def no_payload_ran(db: Path) -> None:
    """The database left behind is repro's own: no trigger, no view, no marker table, let alone a row in it."""
    with sqlite3.connect(db) as raw:
        kinds = {(kind, name) for kind, name in raw.execute("SELECT type, name FROM sqlite_master")}
    raw.close()
    assert kinds == {("table", "meta"), ("table", "files"), ("index", "sqlite_autoindex_meta_1")}, kinds




@pytest.mark.parametrize("payload", PAYLOADS)
def test_hash_discards_a_cache_that_runs_sql(project: Path, guard: Guard, payload: str) -> None:
    db = ship(project, PAYLOADS[payload])
    r = guard.run("hash", "--root", str(project), str(project / "repro/examples/digits"))
    assert r.code == 0, r.err
    assert "discarded it and rebuilt it" in r.err and "not repro's schema" in r.err
    no_payload_ran(db)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_verify_inputs_only_discards_a_cache_that_runs_sql(project: Path, guard: Guard, payload: str) -> None:
    db = ship(project, PAYLOADS[payload])
    r = guard.run("verify", "--inputs-only", "--quiet", str(project / "out" / "repro.lock"))
    assert r.code == 0, r.text
    no_payload_ran(db)


@pytest.mark.parametrize("payload", ["insert-trigger", "runaway-view"])
def test_verify_discards_a_cache_that_runs_sql(project: Path, guard: Guard, payload: str) -> None:
    """A full verify hashes the inputs first, through the same cache; a changed data byte skips the rebuild.

    Exit 1 is the documented "differs" (the data was edited here); what matters is
    that it comes in seconds and the payload never ran.
    """
    db = ship(project, PAYLOADS[payload])
    data = project / "repro/examples/digits/digits.csv"
    data.write_bytes(data.read_bytes().replace(b"0", b"1", 1))
    r = guard.run("verify", "--quiet", "--no-record", str(project / "out" / "repro.lock"))
    assert r.code == 1 and "digits.csv" in r.out and "rebuild    skipped" in r.out, r.text
    no_payload_ran(db)
