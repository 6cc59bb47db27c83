"""How far up a lock may reach: its own folder, and the folders above it up to the top of its git work tree.

A lock's relative paths (data, code, a base release's lock) are resolved against
a project root that repro has to guess from where the lock lies. The guess never
goes above the git top-level, nor above the lock's own folder outside git: a
stranger's lock must not make repro hash /etc/passwd or write /.repro/. This is
that rule, for every caller (`repro verify`'s root, `repro audit`'s base lock).

The top is found on disk, never by asking git: the nearest folder at or above
the lock's that holds a `.git` (a repository folder, or a worktree's `gitdir:`
file). Its work tree is that folder, which contains the lock. git itself would
honour the repository's `core.worktree` (or `GIT_WORK_TREE`), and a shipped
`.git/config` with `core.worktree=../../..` moved the root above the release.
"""

from __future__ import annotations

import os
from pathlib import Path


def git_toplevel(folder: Path) -> Path | None:
    """The nearest folder at or above `folder` (resolved) holding a `.git`; None if none does."""
    start = folder.resolve()
    for candidate in (start, *start.parents):
        dot_git = candidate / ".git"
        if os.path.isdir(dot_git) and os.path.isfile(dot_git / "HEAD") and not os.path.islink(dot_git):
            return candidate
        if os.path.isfile(dot_git) and not os.path.islink(dot_git) and _is_gitdir_file(dot_git):
            return candidate
    return None


def _is_gitdir_file(path: Path) -> bool:
    """A worktree's or submodule's `.git` file: one line `gitdir: PATH`."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == b"gitdir: "
    except OSError:
        return False


def enclosing_folders(folder: Path) -> tuple[list[Path], Path | None]:
    """The folders a lock in `folder` may resolve paths against, nearest first, and the git top-level.

    `folder` (resolved) and each folder above it up to and including the top of
    the git work tree holding it; `folder` alone when no work tree holds it (the
    top-level is then None).
    """
    start = folder.resolve()
    top = git_toplevel(start)
    if top is None or not start.is_relative_to(top):
        return [start], top
    return [start, *(p for p in start.parents if p.is_relative_to(top))], top
