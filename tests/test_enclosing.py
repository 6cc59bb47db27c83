"""How far up a lock may reach: one rule for verify's project root and audit's base lock."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from repro.source.enclosing import enclosing_folders, git_toplevel
from repro.trust.lineage import base_lock_path


def _git_init(folder: Path) -> None:
    subprocess.run(["git", "init", "-q", str(folder)], check=True)


def test_outside_git_only_the_folder_itself(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert git_toplevel(deep) is None
    assert enclosing_folders(deep) == ([deep.resolve()], None)


def test_inside_git_every_folder_up_to_the_top_level_and_no_further(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    deep = repo / "a" / "b"
    deep.mkdir(parents=True)
    _git_init(repo)
    top = repo.resolve()
    assert enclosing_folders(deep) == ([deep.resolve(), (repo / "a").resolve(), top], top)
    assert enclosing_folders(repo) == ([top], top)


def test_a_nested_repository_is_its_own_top(tmp_path: Path) -> None:
    _git_init(tmp_path)
    inner = tmp_path / "vendor" / "inner"
    inner.mkdir(parents=True)
    _git_init(inner)
    assert enclosing_folders(inner / ".") == ([inner.resolve()], inner.resolve())


def test_a_linked_lock_folder_is_taken_where_it_points(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "out").mkdir(parents=True)
    _git_init(repo)
    os.symlink(repo / "out", tmp_path / "link")
    assert enclosing_folders(tmp_path / "link") == ([(repo / "out").resolve(), repo.resolve()], repo.resolve())


def test_audit_finds_a_base_lock_only_within_the_same_bounds(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "base" / "out").mkdir(parents=True)
    (repo / "tune" / "out").mkdir(parents=True)
    (repo / "base" / "out" / "repro.lock").write_text("{}\n")
    (tmp_path / "outside.lock").write_text("{}\n")
    lock = repo / "tune" / "out" / "repro.lock"
    assert base_lock_path(lock, "base/out/repro.lock") is None  # outside git: the lock's folder only
    _git_init(repo)
    assert base_lock_path(lock, "base/out/repro.lock") == (repo / "base" / "out" / "repro.lock").resolve()
    assert base_lock_path(lock, "outside.lock") is None  # above the top level: never looked for
    assert base_lock_path(lock, "../outside.lock") is None  # escapes every root it could be under
