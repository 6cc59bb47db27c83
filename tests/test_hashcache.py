"""The stat cache: trusted only when every stat field matches, discarded when broken."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from repro.source import hashcache
from repro.source.hashcache import HashCache
from repro.source.hashing import hash_files
from repro.source.statkey import StatKey
from repro.source.walk import expand_patterns


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(20):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"f{i}.csv").write_bytes(f"row,{i}\n".encode() * (i + 1))
    return root


@pytest.fixture
def not_racy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test files are seconds old at most; trust them at once instead of after RACY_NS."""
    monkeypatch.setattr(hashcache, "RACY_NS", 0)


def _rels(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _hash(root: Path, cache: HashCache, rehash: bool = False) -> dict[str, str]:
    return {f.path: f.sha256 for f in hash_files(root, _rels(root), cache=cache, rehash=rehash)}


def _truth(root: Path) -> dict[str, str]:
    return {r: _sha(root / r) for r in _rels(root)}


def _tick() -> None:
    time.sleep(0.02)  # past one tick of a coarse file system clock


def test_unchanged_files_come_from_the_cache(tree: Path, tmp_path: Path, not_racy: None) -> None:
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert _hash(tree, cache) == _truth(tree) and cache.hits == 0
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert _hash(tree, cache) == _truth(tree) and cache.hits == 20


@pytest.mark.parametrize("change", ["content_and_size", "same_size_mtime_restored", "touch", "chmod", "replace"])
def test_content_and_metadata_changes_invalidate(tree: Path, tmp_path: Path, not_racy: None, change: str) -> None:
    target = tree / "d1" / "f4.csv"
    with HashCache(tmp_path / "c.sqlite") as cache:
        _hash(tree, cache)
    _tick()
    st = target.stat()
    if change == "content_and_size":
        target.write_bytes(target.read_bytes() + b"x")
    elif change == "same_size_mtime_restored":
        raw = bytearray(target.read_bytes())
        raw[0] ^= 1
        target.write_bytes(bytes(raw))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert target.stat().st_mtime_ns == st.st_mtime_ns and target.stat().st_size == st.st_size
        assert target.stat().st_ctime_ns != st.st_ctime_ns  # what the cache sees: ctime moved
    elif change == "touch":
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    elif change == "chmod":
        target.chmod(0o600)
    else:
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(target.read_bytes())
        os.replace(tmp, target)
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert _hash(tree, cache) == _truth(tree)
        assert cache.hits == 19  # every file but the one that changed


def test_rehash_reads_every_byte_even_when_the_cache_lies(tree: Path, tmp_path: Path, not_racy: None) -> None:
    """What the stat key cannot see (an edit that keeps every stat field) only --rehash catches.

    The kernel will not let a test restore ctime, so the lie is planted in the cache instead:
    a digest filed under the file's current, unchanged stat key.
    """
    target = tree / "d0" / "f0.csv"
    full = str(tree / "d0" / "f0.csv")
    lie = hashlib.sha256(b"not these bytes").hexdigest()
    with HashCache(tmp_path / "c.sqlite") as cache:
        cache.store([(full, StatKey.of(os.stat(full)), {"sha256": lie})], time.time_ns())
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert _hash(tree, cache)["d0/f0.csv"] == lie  # trusted: that is what a stat cache does
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert _hash(tree, cache, rehash=True) == _truth(tree) and cache.hits == 0
    with HashCache(tmp_path / "c.sqlite") as cache:  # and the rehash replaced the lie
        assert _hash(tree, cache)["d0/f0.csv"] == _sha(target) and cache.hits == 20


def test_racy_entries_are_not_trusted(tree: Path, tmp_path: Path) -> None:
    """A file written within RACY_NS of its hashing could change again in the same clock tick."""
    with HashCache(tmp_path / "c.sqlite") as cache:
        _hash(tree, cache)
    with HashCache(tmp_path / "c.sqlite") as cache:
        _hash(tree, cache)
        assert cache.hits == 0  # the files are younger than RACY_NS
    late = time.time_ns() + hashcache.RACY_NS
    with HashCache(tmp_path / "c.sqlite") as cache:
        cache.store([(str(tree / r), StatKey.of(os.stat(tree / r)), {"sha256": d}) for r, d in _truth(tree).items()],
                    late)
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert _hash(tree, cache) == _truth(tree) and cache.hits == 20


def test_extra_algorithms_missing_from_an_entry_are_a_miss(tree: Path, tmp_path: Path, not_racy: None) -> None:
    with HashCache(tmp_path / "c.sqlite") as cache:
        _hash(tree, cache)
    with HashCache(tmp_path / "c.sqlite") as cache:
        got = hash_files(tree, _rels(tree), cache=cache, algorithms=["blake2b"])
        assert cache.hits == 0
        assert {f.path: f.hashes["blake2b"] for f in got} == {
            r: hashlib.blake2b((tree / r).read_bytes()).hexdigest() for r in _rels(tree)}
    with HashCache(tmp_path / "c.sqlite") as cache:
        hash_files(tree, _rels(tree), cache=cache, algorithms=["blake2b"])
        assert cache.hits == 20


def test_a_garbage_cache_file_is_discarded(tree: Path, tmp_path: Path, not_racy: None) -> None:
    db = tmp_path / "c.sqlite"
    db.write_bytes(b"this is not sqlite " * 500)
    with HashCache(db) as cache:
        assert _hash(tree, cache) == _truth(tree)
        assert any("discarded" in n for n in cache.notes)
    with HashCache(db) as cache:
        assert _hash(tree, cache) == _truth(tree) and cache.hits == 20 and not cache.notes


def test_a_damaged_page_never_yields_a_wrong_digest(tmp_path: Path, not_racy: None) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(600):
        (root / f"file-with-a-long-name-{i:04d}.txt").write_bytes(str(i).encode())
    db = tmp_path / "c.sqlite"
    with HashCache(db) as cache:
        _hash(root, cache)
    raw = bytearray(db.read_bytes())
    assert len(raw) > 8 * 4096
    raw[3 * 4096 : 5 * 4096] = b"\xa5" * (2 * 4096)
    db.write_bytes(bytes(raw))
    with HashCache(db) as cache:
        assert _hash(root, cache) == _truth(root)
        assert cache.hits < 600


def test_a_row_edited_behind_the_caches_back_is_a_miss(tree: Path, tmp_path: Path, not_racy: None) -> None:
    db = tmp_path / "c.sqlite"
    with HashCache(db) as cache:
        _hash(tree, cache)
    with sqlite3.connect(db) as raw:
        (rec,) = raw.execute("SELECT rec FROM files WHERE path LIKE '%f7.csv'").fetchone()
        raw.execute("UPDATE files SET rec = ? WHERE path LIKE '%f7.csv'", (rec[:48] + b"\0" * 32 + rec[80:],))
    with HashCache(db) as cache:
        assert _hash(tree, cache) == _truth(tree) and cache.hits == 19


def test_an_old_schema_is_emptied(tree: Path, tmp_path: Path, not_racy: None) -> None:
    db = tmp_path / "c.sqlite"
    with HashCache(db) as cache:
        _hash(tree, cache)
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE meta SET v = '0' WHERE k = 'schema'")
    with HashCache(db) as cache:
        assert _hash(tree, cache) == _truth(tree) and cache.hits == 0


def test_an_unusable_location_means_no_cache_not_an_error(tree: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "a-file" / "sub"))
    with hashcache.open_cache(tree) as cache:
        assert cache.path == tmp_path / "a-file" / "sub" / hashcache.CACHE_NAME
        assert _hash(tree, cache) == _truth(tree)
        assert any("unavailable" in n for n in cache.notes)


def test_the_default_location_is_project_local_and_ignored_by_git(tree: Path) -> None:
    with hashcache.open_cache(tree) as cache:
        _hash(tree, cache)
    assert (tree / ".repro" / "hashcache.sqlite").is_file()
    assert (tree / ".repro" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert not [p for p in expand_patterns(tree, ["."]) if p.startswith(".repro/")]


WRITER = """
import sys, hashlib
from pathlib import Path
from repro.source import hashcache
from repro.source.hashing import hash_files
hashcache.RACY_NS = 0
root, db, part = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
rels = sorted(p.relative_to(root).as_posix() for p in (root / part).rglob("*") if p.is_file())
for _ in range(15):
    with hashcache.HashCache(db) as cache:
        got = hash_files(root, rels, cache=cache, rehash=True)
        assert not cache.notes, cache.notes
        assert all(f.sha256 == hashlib.sha256((root / f.path).read_bytes()).hexdigest() for f in got)
"""


def test_two_processes_share_one_cache(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for part in ("a", "b"):
        (root / part).mkdir(parents=True)
        for i in range(300):
            (root / part / f"{i}.txt").write_bytes(f"{part}{i}".encode())
    db = tmp_path / "shared.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(db), part], env=env,
                              stderr=subprocess.PIPE, text=True) for part in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert raw.execute("SELECT COUNT(*) FROM files").fetchone() == (600,)


# --- each stat field, alone, decides: a planted row that differs in one field only is never trusted ---------------

LIE = hashlib.sha256(b"not these bytes").hexdigest()


def _plant(db: Path, full: str, key: StatKey, hashed_ns: int) -> None:
    with HashCache(db) as cache:
        cache.store([(full, key, {"sha256": LIE})], hashed_ns)


@pytest.mark.parametrize("field", ["size", "mtime_ns", "ctime_ns", "ino", "dev"])
def test_one_changed_stat_field_means_the_file_is_read_again(tree: Path, tmp_path: Path, field: str) -> None:
    """The kernel moves ctime with every edit, so no real edit changes one field alone; the row does instead.

    The planted row holds a lie under the file's stat key with one field moved, hashed long after
    the file last changed (not racy): the cache must not hand the lie out.
    """
    target = tree / "d2" / "f5.csv"
    st = os.stat(target)
    now = StatKey.of(st)
    late = max(st.st_mtime_ns, st.st_ctime_ns) + 10 * hashcache.RACY_NS
    db = tmp_path / "c.sqlite"
    _plant(db, str(target), now, late)
    with HashCache(db) as cache:  # the control: the same row, every field equal, is trusted
        assert _hash(tree, cache)["d2/f5.csv"] == LIE and cache.hits == 1
    _plant(db, str(target), now._replace(**{field: getattr(now, field) + 1}), late)
    with HashCache(db) as cache:
        assert _hash(tree, cache)["d2/f5.csv"] == _sha(target) == _truth(tree)["d2/f5.csv"]
        assert cache.hits == 0


@pytest.mark.parametrize("written_before_hashing_ns", [0, 1, hashcache.RACY_NS // 2, hashcache.RACY_NS - 1])
def test_a_file_changed_within_the_racy_window_is_read_again(tree: Path, tmp_path: Path,
                                                             written_before_hashing_ns: int) -> None:
    """A write in the same clock tick as the hash could leave every stat field equal (git's racy clean).

    So a row hashed less than RACY_NS after the file's last change is not trusted, even though its
    stat key matches: here it holds a lie, and the file is read again.
    """
    target = tree / "d0" / "f3.csv"
    st = os.stat(target)
    changed = max(st.st_mtime_ns, st.st_ctime_ns)
    db = tmp_path / "c.sqlite"
    _plant(db, str(target), StatKey.of(st), changed + written_before_hashing_ns)
    with HashCache(db) as cache:
        assert _hash(tree, cache)["d0/f3.csv"] == _sha(target) and cache.hits == 0
    _plant(db, str(target), StatKey.of(st), changed + hashcache.RACY_NS)  # just outside the window: trusted
    with HashCache(db) as cache:
        assert _hash(tree, cache)["d0/f3.csv"] == LIE and cache.hits == 1


def test_a_real_edit_right_after_hashing_is_seen(tree: Path, tmp_path: Path) -> None:
    """Hash, then edit at once (same size, within the racy window): the next run reads the new bytes."""
    target = tree / "d1" / "f1.csv"
    with HashCache(tmp_path / "c.sqlite") as cache:
        _hash(tree, cache)
    raw = bytearray(target.read_bytes())
    raw[0] ^= 1
    target.write_bytes(bytes(raw))
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert _hash(tree, cache) == _truth(tree)


def test_range_lookups_find_every_file_in_any_order(tree: Path, tmp_path: Path, not_racy: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Lookups scan sorted ranges of paths a few at a time; the caller's order and duplicates must not matter."""
    monkeypatch.setattr(hashcache, "_SCAN", 3)
    rels = list(reversed(_rels(tree))) + [_rels(tree)[4]]
    with HashCache(tmp_path / "c.sqlite") as cache:
        hash_files(tree, rels, cache=cache)
    with HashCache(tmp_path / "c.sqlite") as cache:
        got = hash_files(tree, rels, cache=cache)
        assert cache.hits >= 20
    assert [f.path for f in got] == rels and all(f.sha256 == _sha(tree / f.path) for f in got)


def test_a_cached_row_gives_only_the_algorithms_asked_for(tree: Path, tmp_path: Path, not_racy: None) -> None:
    """A row hashed with more extra algorithms than this run asks for must not add them to the lock."""
    with HashCache(tmp_path / "c.sqlite") as cache:
        hash_files(tree, _rels(tree), cache=cache, algorithms=["blake2b", "md5"])
    with HashCache(tmp_path / "c.sqlite") as cache:
        got = hash_files(tree, _rels(tree), cache=cache, algorithms=["md5"])
        assert cache.hits == 20
    assert {tuple(f.hashes) for f in got} == {("sha256", "md5")}
    assert all(f.hashes["md5"] == hashlib.md5((tree / f.path).read_bytes()).hexdigest() for f in got)


# --- the warm check in bulk, and a database that is not repro's ------------------------------------------------------


def test_a_range_whose_rows_line_up_is_checked_in_bulk(tree: Path, tmp_path: Path, not_racy: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 32: when a range's rows are exactly the files asked for, no Python step runs per row."""
    with HashCache(tmp_path / "c.sqlite") as cache:
        _hash(tree, cache)

    def per_row(*_: object) -> None:
        raise AssertionError("checked row by row")

    monkeypatch.setattr(HashCache, "_each", per_row)
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert _hash(tree, cache) == _truth(tree) and cache.hits == 20


@pytest.mark.parametrize("change", ["removed", "added", "racy"])
def test_a_range_that_does_not_line_up_is_checked_row_by_row(tree: Path, tmp_path: Path, not_racy: None,
                                                             change: str) -> None:
    """A removed file's stale row, a new file without one, a racy row: the rest of the range still hits."""
    db = tmp_path / "c.sqlite"
    with HashCache(db) as cache:
        _hash(tree, cache)
    if change == "removed":
        (tree / "d1" / "f7.csv").unlink()
    elif change == "added":
        (tree / "d1" / "f99.csv").write_bytes(b"new")
    else:
        full = str(tree / "d1" / "f7.csv")
        st = os.stat(full)
        with HashCache(db) as cache:  # re-filed as hashed before its last change (RACY_NS is 0 here)
            cache.store([(full, StatKey.of(st), {"sha256": LIE})], max(st.st_mtime_ns, st.st_ctime_ns) - 1)
    with HashCache(db) as cache:
        assert _hash(tree, cache) == _truth(tree)
        assert cache.hits == (19 if change != "added" else 20)


def test_the_watchdog_interrupts_a_statement_past_its_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashcache, "STATEMENT_SECONDS", 0.2)
    with HashCache(tmp_path / "c.sqlite") as cache:
        assert cache._db is not None
        started = time.monotonic()
        with pytest.raises(hashcache._Timeout):
            cache._run(cache._db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) "
                                  "FROM c")
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("extra", ["CREATE TRIGGER t AFTER INSERT ON files BEGIN DELETE FROM meta; END",
                                   "CREATE VIEW v AS SELECT 1", "CREATE TABLE other (x)",
                                   "CREATE INDEX ix ON files (rec)"])
def test_a_database_with_anything_repro_never_creates_is_discarded_before_use(tree: Path, tmp_path: Path,
                                                                            not_racy: None, extra: str) -> None:
    db = tmp_path / "c.sqlite"
    with HashCache(db) as cache:
        _hash(tree, cache)
    with sqlite3.connect(db) as raw:
        raw.execute(extra)
    raw.close()
    with HashCache(db) as cache:
        assert any("not repro's schema" in n and "discarded" in n for n in cache.notes)
        assert _hash(tree, cache) == _truth(tree) and cache.hits == 0
    with sqlite3.connect(db) as raw:
        assert sorted(raw.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"), key=repr) == \
            hashcache._SCHEMA_ROWS
    raw.close()
