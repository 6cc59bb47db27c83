from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from repro.errors import DataError, LockfileError
from repro.hashing import FileDigest, expand_patterns, hash_file, hash_files, resolve_under, root_digest


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
