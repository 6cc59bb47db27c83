"""How far up a lock may reach: its own folder, and the folders above it up to the top of its git work tree.

A lock's relative paths (data, code, a base release's lock) are resolved against
a project root that repro has to guess from where the lock lies. The guess never
goes above the git top-level, nor above the lock's own folder outside git: a
stranger's lock must not make repro hash /etc/passwd or write /.repro/. This is
that rule, for every caller (`repro verify`'s root, `repro audit`'s base lock).
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_toplevel(folder: Path) -> Path | None:
    """The top folder of the git work tree holding `folder`, resolved; None outside git (or without git)."""
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(out).resolve() if out else None


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
