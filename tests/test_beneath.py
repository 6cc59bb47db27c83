"""Hashing a walked tree: one descriptor per file, opened beneath the root, checked by one fstat."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from repro.errors import DataError, LockfileError
from repro.safeio import Beneath
from repro.source import hashcache
from repro.source.hashcache import HashCache
from repro.source.hashfile import CHUNK, MAX_HASHED_BYTES, digest_fd
from repro.source.hashtree import hash_tree
from repro.source.statkey import KEY_SIZE, pack_key
from repro.source.walk import locate_patterns


def _tree(root: Path, files: int = 5, size: int = 100) -> None:
    for i in range(files):
        (root / "data" / "sub").mkdir(parents=True, exist_ok=True)
        (root / "data" / "sub" / f"f{i}.bin").write_bytes(bytes([i]) * size)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_file_is_stat_once_by_the_walk_and_once_through_its_descriptor(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 32: after the walk's lstat, nothing stats a file again but one fstat of the descriptor it is read by."""
    _tree(tmp_path, files=200)
    located = locate_patterns(tmp_path, ["data"])
    calls: dict[str, int] = {"stat": 0, "lstat": 0, "fstat": 0}
    lock = threading.Lock()
    for name in calls:
        real = getattr(os, name)

        def counted(target: object, *args: object, _real: object = real, _name: str = name,
                    **kwargs: object) -> os.stat_result:
            if _name == "fstat" or str(target).endswith(".bin"):  # a data file, by name or by descriptor
                with lock:
                    calls[_name] += 1
            return _real(target, *args, **kwargs)  # type: ignore[operator, no-any-return]

        monkeypatch.setattr(os, name, counted)
    tree = hash_tree(tmp_path, located, workers=2)
    monkeypatch.undo()
    assert calls == {"stat": 0, "lstat": 0, "fstat": 200}
    assert [f.sha256 for f in tree] == [_sha(tmp_path / p) for p in located.paths]


def test_a_file_replaced_after_the_walk_is_read_again_with_its_new_stat(tmp_path: Path) -> None:
    _tree(tmp_path)
    located = locate_patterns(tmp_path, ["data"])
    target = tmp_path / "data" / "sub" / "f2.bin"
    staged = tmp_path / "staged"
    staged.write_bytes(b"new bytes, same length, new inode"[:100].ljust(100, b"."))
    os.replace(staged, target)
    tree = hash_tree(tmp_path, located)
    i = located.paths.index("data/sub/f2.bin")
    assert tree.file(i).sha256 == _sha(target)
    assert bytes(located.keys[i * KEY_SIZE : (i + 1) * KEY_SIZE]) == pack_key(os.stat(target))  # type: ignore[index]


def test_a_file_replaced_while_it_is_read_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The descriptor still holds the old inode, but replacing it drops its link count, which moves its ctime:
    the fstat after the last byte differs from the walk's, so the path is opened and read again."""
    monkeypatch.setattr(hashcache, "RACY_NS", 0)
    target = tmp_path / "data" / "big.bin"
    target.parent.mkdir()
    old, new = b"a" * (3 * CHUNK), b"b" * (3 * CHUNK)
    target.write_bytes(old)
    staged = tmp_path / "staged"
    staged.write_bytes(new)
    located = locate_patterns(tmp_path, ["data"])
    seen: list[int] = []

    class SwapOnce:
        def start(self, total_bytes: int, total_files: int) -> None:
            pass

        def advance(self, nbytes: int, nfiles: int) -> None:
            seen.append(nbytes)
            if staged.exists():
                os.replace(staged, target)

    with HashCache(tmp_path / "c.sqlite") as cache:
        tree = hash_tree(tmp_path, located, cache=cache, progress=SwapOnce())
    assert tree.file(0).sha256 == hashlib.sha256(new).hexdigest() and sum(seen) > len(new)  # read twice
    assert bytes(located.keys[:KEY_SIZE]) == pack_key(os.stat(target))  # filed under the new file's key
    with HashCache(tmp_path / "c.sqlite") as cache:  # (a miss or a hit, as the racy window decides)
        again = hash_tree(tmp_path, locate_patterns(tmp_path, ["data"]), cache=cache)
        assert again.file(0).sha256 == hashlib.sha256(new).hexdigest()


def test_a_file_that_grows_after_the_walk_is_read_again(tmp_path: Path) -> None:
    _tree(tmp_path)
    located = locate_patterns(tmp_path, ["data"])
    with open(tmp_path / "data" / "sub" / "f0.bin", "ab") as fh:
        fh.write(b"more")
    tree = hash_tree(tmp_path, located)
    assert tree.file(0).sha256 == _sha(tmp_path / "data" / "sub" / "f0.bin") and tree.sizes[0] == 104


@pytest.mark.parametrize("swap", ["file", "folder"])
def test_a_link_out_swapped_in_after_the_walk_is_refused_not_followed(tmp_path: Path, swap: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    _tree(root)
    outside.mkdir()
    secret = b"outside the root"
    for i in range(5):
        (outside / f"f{i}.bin").write_bytes(secret)
    located = locate_patterns(root, ["data"])
    if swap == "file":
        (root / "data" / "sub" / "f3.bin").unlink()
        os.symlink(outside / "f3.bin", root / "data" / "sub" / "f3.bin")
    else:
        shutil.rmtree(root / "data" / "sub")
        os.symlink(outside, root / "data" / "sub")
    with pytest.raises(LockfileError, match="resolves outside the project root"):
        hash_tree(root, located, workers=1)


def test_a_fifo_swapped_in_after_the_walk_is_refused_without_blocking(tmp_path: Path) -> None:
    _tree(tmp_path)
    located = locate_patterns(tmp_path, ["data"])
    target = tmp_path / "data" / "sub" / "f1.bin"
    target.unlink()
    os.mkfifo(target)
    with pytest.raises(DataError, match="f1.bin: not a regular file"):
        hash_tree(tmp_path, located)


def test_links_inside_the_root_are_read_through_their_targets(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / "links").mkdir()
    os.symlink("../data/sub/f1.bin", tmp_path / "links" / "to-file")
    os.symlink("../data/sub", tmp_path / "links" / "to-folder")
    located = locate_patterns(tmp_path, ["links"])
    got = {f.path: f.sha256 for f in hash_tree(tmp_path, located)}
    assert got == {"links/to-file": _sha(tmp_path / "data/sub/f1.bin"),
                   **{f"links/to-folder/f{i}.bin": _sha(tmp_path / f"data/sub/f{i}.bin") for i in range(5)}}


def test_beneath_never_climbs_out(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with Beneath(str(tmp_path / "root")) as opener, pytest.raises(LockfileError, match="escapes"):
        opener.folder("a/../..")


def test_a_file_over_the_cap_is_refused_before_a_byte_is_read(tmp_path: Path) -> None:
    """A sparse 'two terabytes' costs nothing to store; hashing it would take many minutes."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "small.bin").write_bytes(b"x")
    with open(tmp_path / "data" / "huge.bin", "wb") as fh:
        fh.truncate(2 * MAX_HASHED_BYTES)
    started = time.monotonic()
    with pytest.raises(DataError, match=r"^data/huge.bin: 2,199,023,255,552 bytes is over the 1,099,511,627,776-byte "
                                        "cap on a file repro hashes$"):
        hash_tree(tmp_path, locate_patterns(tmp_path, ["data"]))
    fd = os.open(tmp_path / "data" / "huge.bin", os.O_RDONLY)
    try:
        with pytest.raises(DataError, match="huge.bin: .* bytes is over the"):
            digest_fd(fd, shown="huge.bin")
    finally:
        os.close(fd)
    assert time.monotonic() - started < 5
