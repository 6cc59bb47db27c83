from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from repro.errors import ConfigError, DataError, LockfileError
from repro.source.filetree import resolve_under
from repro.source.hashfile import CHUNK, READAHEAD_MIN, FileDigest, hash_file
from repro.source.hashing import hash_files, root_digest
from repro.source.readahead import hash_with_readahead
from repro.source.walk import expand_patterns

# Sizes read in one thread, and read ahead by a second one (repro.source.readahead).
SIZES = pytest.mark.parametrize("size", [3 * CHUNK, READAHEAD_MIN + CHUNK + 5], ids=["one-thread", "readahead"])


def _tree(root: Path) -> None:
    (root / "sub dir").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub dir" / "b é.bin").write_bytes(bytes(range(256)) * 5000)
    (root / "empty").write_bytes(b"")


def test_golden_digests_of_a_fixed_tree(tmp_path: Path) -> None:
    _tree(tmp_path)
    files = hash_files(tmp_path, expand_patterns(tmp_path, ["."]))
    assert [f.path for f in files] == ["a.txt", "empty", "sub dir/b é.bin"]
    assert [f.sha256 for f in files] == [
        "b6a98d9ce9a2d9149288fa3df42d377c3e42737afdcdaf714e33c0a100b51060",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "7d471e4af16db5a30ce10aebbc29f5178b2edbad6c7dc2e8ff8ee6e4848a726f",
    ]
    assert root_digest(files) == "074de1ea152973b3e52ce7f96e2107d466c5ade3e2116a8e55d519cd7cea0aae"


def test_root_digest_equals_sha256sum_listing(tmp_path: Path) -> None:
    """The spec: root digest = sha256 of `sha256sum` lines sorted by path bytes."""
    _tree(tmp_path)
    rels = expand_patterns(tmp_path, ["."])
    out = subprocess.run(["sha256sum", "--", *rels], cwd=tmp_path, capture_output=True, check=True).stdout
    lines = sorted(out.splitlines(keepends=True), key=lambda ln: ln.split(b"  ", 1)[1])
    assert root_digest(hash_files(tmp_path, rels)) == hashlib.sha256(b"".join(lines)).hexdigest()


def test_root_digest_ignores_order_and_location(tmp_path: Path) -> None:
    a, b = tmp_path / "one", tmp_path / "elsewhere" / "two"
    _tree(a)
    _tree(b)
    da = hash_files(a, expand_patterns(a, ["."]))
    db = hash_files(b, expand_patterns(b, ["."]))
    assert root_digest(da) == root_digest(list(reversed(db)))


def test_one_byte_changes_file_and_root(tmp_path: Path) -> None:
    _tree(tmp_path)
    before = hash_files(tmp_path, ["a.txt", "empty"])
    (tmp_path / "a.txt").write_bytes(b"alphA\n")
    after = hash_files(tmp_path, ["a.txt", "empty"])
    assert before[0].sha256 != after[0].sha256 and before[1] == after[1]
    assert root_digest(before) != root_digest(after)


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", "~/x", "a\\b"])
def test_paths_that_escape_the_root_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(LockfileError):
        resolve_under(tmp_path, bad)


def test_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret").write_text("x")
    (tmp_path / "root" / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(LockfileError, match="outside"):
        resolve_under(tmp_path / "root", "link")


def test_missing_pattern_and_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothere.csv"):
        expand_patterns(tmp_path, ["nothere.csv"])
    with pytest.raises(DataError, match="gone"):
        hash_file(tmp_path / "gone")


def test_file_digest_json_shape() -> None:
    assert FileDigest("a", 1, "0" * 64).to_json() == {"path": "a", "size": 1, "hashes": {"sha256": "0" * 64}}


# --- extra algorithms, checked against coreutils --------------------------------------------------------------


@pytest.mark.parametrize(("alg", "tool"), [("blake2b", "b2sum"), ("md5", "md5sum"), ("sha512", "sha512sum")])
def test_extra_algorithms_match_coreutils(tmp_path: Path, alg: str, tool: str) -> None:
    _tree(tmp_path)
    rels = expand_patterns(tmp_path, ["."])
    files = hash_files(tmp_path, rels, algorithms=[alg])
    out = subprocess.run([tool, "--", *rels], cwd=tmp_path, capture_output=True, check=True, text=True).stdout
    expected = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in out.splitlines()}
    assert {f.path: f.hashes[alg] for f in files} == expected
    assert [f.hashes["sha256"] for f in files] == [f.sha256 for f in hash_files(tmp_path, rels)]
    # The root digest is defined over sha256 alone, whatever else is recorded.
    assert root_digest(files) == root_digest(hash_files(tmp_path, rels))


def test_unknown_algorithm_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(ConfigError, match="data.extra_hashes: 'crc32'"):
        hash_files(tmp_path, ["a"], algorithms=["crc32"])


# --- order, location, names -----------------------------------------------------------------------------------


def test_creation_order_does_not_matter_but_names_do(tmp_path: Path) -> None:
    names = [f"n{i:03d}.bin" for i in range(200)]
    a, b = tmp_path / "a", tmp_path / "b"
    for root, order in ((a, names), (b, list(reversed(names)))):
        root.mkdir()
        for n in order:
            (root / n).write_bytes(n.encode() * 3)
    ra = root_digest(hash_files(a, expand_patterns(a, ["."])))
    assert ra == root_digest(hash_files(b, expand_patterns(b, ["."])))
    (b / names[0]).rename(b / "renamed.bin")
    rb = hash_files(b, expand_patterns(b, ["."]))
    assert ra != root_digest(rb)
    assert sorted(f.sha256 for f in rb) == sorted(f.sha256 for f in hash_files(a, expand_patterns(a, ["."])))


def test_many_files_in_parallel_match_hashlib_in_input_order(tmp_path: Path) -> None:
    rels = []
    for i in range(300):
        rel = f"d{i % 7}/f{i}.bin"
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(bytes([i % 256]) * (i * 37))
        rels.append(rel)
    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * 20_000)  # 5 MiB: streamed in chunks
    rels.append("big.bin")
    rels.reverse()
    got = hash_files(tmp_path, rels, workers=4)
    assert [f.path for f in got] == rels
    assert [f.sha256 for f in got] == [hashlib.sha256((tmp_path / r).read_bytes()).hexdigest() for r in rels]
    assert [f.size for f in got] == [(tmp_path / r).stat().st_size for r in rels]


# --- symlinks: followed inside the root, recorded under the link's path ----------------------------------------


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x.txt").write_bytes(b"x\n")
    (tmp_path / "link.txt").symlink_to("real/x.txt")
    (tmp_path / "linkdir").symlink_to("real")
    rels = expand_patterns(tmp_path, ["."])
    assert rels == ["link.txt", "linkdir/x.txt", "real/x.txt"]
    digests = {f.path: f.sha256 for f in hash_files(tmp_path, rels)}
    assert len(set(digests.values())) == 1 == len({hashlib.sha256(b"x\n").hexdigest()} | set(digests.values()))


@pytest.mark.parametrize(("make", "error", "needle"), [
    (lambda r: (r / "d").mkdir() or (r / "d" / "loop").symlink_to(".."), DataError, "symlink loop"),
    (lambda r: (r / "dangling").symlink_to("nowhere"), DataError, "broken symlink"),
    (lambda r: (r / "out").symlink_to("/etc"), LockfileError, "outside the project root"),
])
def test_bad_symlinks_in_a_walk_are_refused(tmp_path: Path, make: Any, error: type, needle: str) -> None:
    (tmp_path / "ok.txt").write_bytes(b"ok")
    make(tmp_path)
    with pytest.raises(error, match=needle):
        expand_patterns(tmp_path, ["."])


# --- empty files and directories --------------------------------------------------------------------------------


def test_empty_dirs_are_not_data_and_empty_files_are(tmp_path: Path) -> None:
    _tree(tmp_path)
    before = root_digest(hash_files(tmp_path, expand_patterns(tmp_path, ["."])))
    (tmp_path / "hollow" / "deeper").mkdir(parents=True)
    assert root_digest(hash_files(tmp_path, expand_patterns(tmp_path, ["."]))) == before
    with pytest.raises(DataError, match="empty directories"):
        expand_patterns(tmp_path, ["hollow"])
    (tmp_path / "hollow" / "zero").write_bytes(b"")
    files = hash_files(tmp_path, expand_patterns(tmp_path, ["."]))
    assert root_digest(files) != before
    assert {f.path: f.size for f in files}["hollow/zero"] == 0


def test_tool_folders_are_skipped_hidden_files_are_not(tmp_path: Path) -> None:
    for rel in (".git/HEAD", ".repro/hashcache.sqlite", ".dvc/config", "sub/.git/x", ".hidden/kept", "a.csv"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"1")
    assert expand_patterns(tmp_path, ["."]) == [".hidden/kept", "a.csv"]


# --- names the lock cannot hold, and files we cannot read -------------------------------------------------------


def test_non_utf8_and_backslash_names_are_refused(tmp_path: Path) -> None:
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff.csv"), "wb") as fh:
        fh.write(b"x")
    with pytest.raises(DataError, match="not valid UTF-8"):
        expand_patterns(tmp_path, ["."])
    os.unlink(os.path.join(os.fsencode(tmp_path), b"bad\xff.csv"))
    (tmp_path / "a\\b.csv").write_bytes(b"x")
    with pytest.raises(DataError, match="backslash"):
        expand_patterns(tmp_path, ["."])


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(DataError, match="pipe: not a regular file"):
        expand_patterns(tmp_path, ["."])
    with pytest.raises(DataError, match="pipe: not a regular file"):
        hash_files(tmp_path, ["pipe"])
    with pytest.raises(DataError, match="not a regular file"):
        hash_file(tmp_path / "pipe")


def test_a_directory_where_a_file_is_expected(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="d: expected a file, found a directory"):
        hash_files(tmp_path, ["d"])
    with pytest.raises(DataError, match="expected a file, found a directory"):
        hash_file(tmp_path / "d")


def test_unreadable_file_error_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as root, which reads through chmod 000, so the kernel's refusal is simulated."""
    _tree(tmp_path)
    real_open = os.open
    target = str(tmp_path / "sub dir" / "b é.bin")

    def refuse(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) in (target, "b é.bin"):  # by its path, or by its name beneath its open folder
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(DataError, match="^sub dir/b é.bin: permission denied while reading$"):
        hash_files(tmp_path, expand_patterns(tmp_path, ["."]), workers=2)


# --- files that change while they are read ----------------------------------------------------------------------


@SIZES
def test_a_file_that_grows_once_is_read_again(tmp_path: Path, size: int) -> None:
    p = tmp_path / "growing.bin"
    p.write_bytes(b"\0" * size)
    calls = []

    def append_once(n: int) -> None:
        if not calls:
            with open(p, "ab") as fh:
                fh.write(b"late")
        calls.append(n)

    read, digest = hash_file(p, on_bytes=append_once)
    assert read == size + 4
    assert digest == hashlib.sha256(p.read_bytes()).hexdigest()
    assert sum(calls) > read  # the first, torn read was thrown away


@SIZES
def test_a_file_that_keeps_changing_is_an_error(tmp_path: Path, size: int) -> None:
    p = tmp_path / "log.bin"
    p.write_bytes(b"\0" * size)

    def append(n: int) -> None:
        with open(p, "ab") as fh:
            fh.write(b"more")

    with pytest.raises(DataError, match="log.bin: changed while being hashed"):
        hash_file(p, on_bytes=append)


@SIZES
def test_a_file_replaced_during_the_read_is_read_again(tmp_path: Path, size: int) -> None:
    p = tmp_path / "swap.bin"
    p.write_bytes(b"a" * size)
    new = tmp_path / "new.bin"
    new.write_bytes(b"b" * size)
    calls = []

    def swap_once(n: int) -> None:
        if not calls:
            os.replace(new, p)  # same size, new inode: only the path's stat shows it
        calls.append(n)

    _, digest = hash_file(p, on_bytes=swap_once)
    assert digest == hashlib.sha256(b"b" * size).hexdigest()


def test_a_large_file_read_ahead_matches_hashlib_and_reports_every_byte(tmp_path: Path) -> None:
    p = tmp_path / "big.bin"
    p.write_bytes(os.urandom(READAHEAD_MIN + 12345))
    seen: list[int] = []
    size, digest = hash_file(p, on_bytes=seen.append)
    assert (size, digest) == (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    assert sum(seen) == size


def test_readahead_stops_at_the_limit_and_raises_either_threads_error(tmp_path: Path) -> None:
    import threading

    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * (10 * CHUNK))
    before = threading.active_count()
    fd = os.open(p, os.O_RDONLY)
    try:
        h = hashlib.sha256()
        assert hash_with_readahead(fd, 2 * CHUNK, [h], CHUNK, None) == 3 * CHUNK  # one chunk past the limit

        class Stop(Exception):
            pass

        def stop(n: int) -> None:
            raise Stop
        with pytest.raises(Stop):  # the hashing side fails: the reader is stopped and joined
            hash_with_readahead(fd, 10 * CHUNK, [hashlib.sha256()], CHUNK, stop)
    finally:
        os.close(fd)
    with pytest.raises(OSError):  # the reading side fails: raised in the caller's thread
        hash_with_readahead(fd, 10 * CHUNK, [hashlib.sha256()], CHUNK, None)
    assert threading.active_count() == before


def test_the_documented_coreutils_pipeline_gives_the_root_digest(tmp_path: Path) -> None:
    """docs/lockfile.md: `sha256sum -- FILE... | LC_ALL=C sort -k2 | sha256sum`."""
    _tree(tmp_path)
    (tmp_path / "a b").mkdir()
    (tmp_path / "a b" / "z").write_bytes(b"z")
    (tmp_path / "a-b").write_bytes(b"dash")  # ' ' (0x20) < '-' (0x2d) < '/' (0x2f)
    (tmp_path / "Ä.txt").write_bytes(b"upper umlaut")
    rels = expand_patterns(tmp_path, ["."])
    out = subprocess.run(["sh", "-c", 'sha256sum -- "$@" | LC_ALL=C sort -k2 | sha256sum', "sh", *reversed(rels)],
                         cwd=tmp_path, capture_output=True, check=True, text=True).stdout
    assert out.split()[0] == root_digest(hash_files(tmp_path, rels))


def test_on_file_sees_every_digest_once(tmp_path: Path) -> None:
    _tree(tmp_path)
    rels = expand_patterns(tmp_path, ["."])
    seen: list[FileDigest] = []
    got = hash_files(tmp_path, rels, workers=2, on_file=seen.append)
    assert sorted(seen, key=lambda f: f.path) == got


def test_blake3_when_installed(tmp_path: Path) -> None:
    blake3 = pytest.importorskip("blake3")
    _tree(tmp_path)
    rels = expand_patterns(tmp_path, ["."])
    got = {f.path: f.hashes["blake3"] for f in hash_files(tmp_path, rels, algorithms=["blake3"])}
    assert got == {r: blake3.blake3((tmp_path / r).read_bytes()).hexdigest() for r in rels}
