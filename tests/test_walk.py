"""The walk: byte-ordered paths without a global sort, and the stats it takes on the way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.errors import DataError
from repro.safeio import Beneath
from repro.source.hashing import hash_files
from repro.source.hashtree import hash_tree
from repro.source.statkey import KEY_SIZE, pack_key
from repro.source.walk import Located, _walk, expand_patterns, locate_patterns

# Names whose byte order differs from a folder-by-folder order: '-' and '.' sort before '/', '0' after.
NAMES = st.sampled_from(["a", "a.txt", "a-b", "a0", "ab", "b", "é", "z", "A", "a b"])
TREES = st.lists(st.lists(NAMES, min_size=1, max_size=3), min_size=1, max_size=12)


def _make(root: Path, tree: list[list[str]]) -> list[str]:
    """Files at these name chains (a prefix already used as a file cannot also be a folder); their paths."""
    made: set[str] = set()
    for chain in tree:
        rel = "/".join(chain)
        parts = [("/".join(chain[: i + 1])) for i in range(len(chain) - 1)]
        if any(p in made for p in parts) or any(m.startswith(rel + "/") for m in made) or rel in made:
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
        made.add(rel)
    return sorted(made)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=TREES)
def test_the_walk_lists_every_file_in_byte_order(tmp_path_factory: pytest.TempPathFactory,
                                                 tree: list[list[str]]) -> None:
    root = tmp_path_factory.mktemp("walk")
    made = _make(root, tree)
    assert expand_patterns(root, ["."]) == made == sorted(made, key=lambda p: p.encode())
    walked = Located()
    with Beneath(str(root)) as opener:
        _walk(opener, "", walked)
    assert walked.paths == made  # in byte order as walked: a million names need no sort afterwards
    located = locate_patterns(root, ["."])
    assert located.paths == made
    assert located.keys is not None
    assert [bytes(located.keys[i * KEY_SIZE : (i + 1) * KEY_SIZE]) for i in range(len(made))] == [
        pack_key(os.lstat(root / p)) for p in made]
    assert list(located.sizes) == [len(p.encode()) for p in made]


def test_overlapping_patterns_give_each_file_once_with_its_own_stat(tmp_path: Path) -> None:
    for rel in ("d/x", "d/y", "e/z", "top"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel * 3)
    located = locate_patterns(tmp_path, ["e", "d", "d/x", "*"])
    assert located.paths == ["d/x", "d/y", "e/z", "top"]
    assert located.keys is not None
    assert [bytes(located.keys[i * KEY_SIZE : (i + 1) * KEY_SIZE]) for i in range(4)] == [
        pack_key(os.lstat(tmp_path / p)) for p in located.paths]


def test_a_link_to_a_file_is_listed_under_its_name_with_its_targets_stat(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("bytes")
    (tmp_path / "link").symlink_to("real/f")
    (tmp_path / "folder-link").symlink_to("real")
    located = locate_patterns(tmp_path, ["."])
    assert located.paths == ["folder-link/f", "link", "real/f"]
    assert located.keys is not None
    target = pack_key(os.stat(tmp_path / "real" / "f"))
    assert {bytes(located.keys[i * KEY_SIZE : (i + 1) * KEY_SIZE]) for i in range(3)} == {target}


def test_hashing_what_the_walk_located_equals_hashing_the_paths(tmp_path: Path) -> None:
    for i in range(150):  # past one pool batch, so the threaded path runs
        (tmp_path / f"d{i % 7}" / f"f{i}").parent.mkdir(exist_ok=True)
        (tmp_path / f"d{i % 7}" / f"f{i}").write_bytes(os.urandom(100 + i))
    located = locate_patterns(tmp_path, ["."])
    tree = hash_tree(tmp_path, located)
    assert list(tree) == hash_files(tmp_path, expand_patterns(tmp_path, ["."]))


def test_a_name_that_is_not_utf8_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "ok").write_text("x")
    (tmp_path / os.fsdecode(b"bad\xff")).write_text("x")
    with pytest.raises(DataError, match=r"bad\\xff.*not valid UTF-8"):
        locate_patterns(tmp_path, ["."])



def test_a_deep_tree_holds_one_open_folder_at_a_time(tmp_path: Path) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    deep = tmp_path / "/".join(["d"] * 60)
    deep.mkdir(parents=True)
    (deep / "leaf").write_text("x")
    (tmp_path / "d" / "z").write_text("after the subfolder")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 40), hard))  # fewer than the depth
    try:
        located = locate_patterns(tmp_path, ["."])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert located.paths == ["/".join(["d"] * 60) + "/leaf", "d/z"]


def test_a_listed_path_in_a_folder_linked_outside_is_refused_before_it_is_looked_at(tmp_path: Path) -> None:
    from repro.errors import LockfileError

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "present").write_text("x")
    (root / "linked").symlink_to(outside)
    for rel in ("linked/present", "linked/missing"):  # missing: still 'outside', never 'not found'
        with pytest.raises(LockfileError, match=f"data file '{rel}': resolves outside the project root"):
            hash_files(root, [rel])
