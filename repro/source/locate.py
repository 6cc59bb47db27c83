"""Stat every file of a tree once, refusing anything outside the root. Never imports torch.

For paths given as a list (a lock's), this is the cost of a warm re-check that
the stat cache cannot save: at a million files the `lstat` calls dominate. So
they are made relative to an open folder (`lstat(name, dir_fd=...)`: the kernel
does not walk the full path again for every file). `realpath` runs once per
folder and once per symbolic link, never per plain file. (More threads made it
slower: each call is too short to win back the GIL hand-off; BENCHMARKS.md.)
A walk takes the same stats itself (`walk.locate_patterns`).
"""

from __future__ import annotations

import os
import stat
from array import array
from collections.abc import Iterator, Sequence

from repro.errors import DataError, LockfileError
from repro.source.filetree import check_relpath, inside, os_reason
from repro.source.statkey import KEY_SIZE, pack_key

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


def locate(root: str, rel_paths: Sequence[str]) -> tuple[bytearray, array]:  # type: ignore[type-arg]
    """Packed stat keys (`statkey.pack_key`, KEY_SIZE bytes a file) and sizes, in the order of `rel_paths`.

    Each path is checked (relative, no `..`), must stay inside `root` after links,
    and must be a regular file (a link to one is followed). The error names the
    first bad path in the given order.
    """
    n = len(rel_paths)
    keys, sizes = bytearray(KEY_SIZE * n), array("q", bytes(8 * n))
    job = _Job(root, os.path.realpath(root), rel_paths, keys, sizes)
    safe: dict[str, bool] = {}
    for start, end, folder in _folder_runs(rel_paths):
        job.folder(start, end, folder, safe)
    return keys, sizes


def _folder_runs(rel_paths: Sequence[str]) -> Iterator[tuple[int, int, str]]:
    """(start, end, folder) for each run of consecutive paths in the same folder ('' for the root)."""
    start, folder = 0, None
    for i, rel in enumerate(rel_paths):
        parent = rel[: rel.rfind("/") + 1]
        if parent != folder:
            if folder is not None:
                yield start, i, folder
            start, folder = i, parent
    if folder is not None:
        yield start, len(rel_paths), folder


class _Job:
    """The root, the paths, and the arrays filled at each path's index."""

    def __init__(self, base: str, real_root: str, rels: Sequence[str], keys: bytearray,
                 sizes: array) -> None:  # type: ignore[type-arg]
        self.base, self.real_root, self.rels, self.keys, self.sizes = base, real_root, rels, keys, sizes

    def folder(self, start: int, end: int, folder: str, safe: dict[str, bool]) -> None:
        base, rels, keys, sizes = self.base, self.rels, self.keys, self.sizes
        check_relpath(rels[start], "data file")  # a '..' or absolute folder: refused before it is opened
        path = f"{base}/{folder}" if folder else base
        ok = safe.get(folder)
        if ok is None:
            ok = safe[folder] = inside(self.real_root, os.path.realpath(path))
        if not ok:  # nothing outside the root is opened or stat'ed, not even to say it is missing
            raise LockfileError(f"data file {rels[start]!r}: resolves outside the project root")
        try:
            fd = os.open(path, _OPEN_DIR)
        except OSError:
            fd = -1  # each file's own lstat below names the error
        lstat, skip, is_reg = os.lstat, len(folder), stat.S_ISREG
        try:
            for i in range(start, end):
                rel = rels[i]
                check_relpath(rel, "data file")
                try:
                    st = lstat(rel[skip:], dir_fd=fd) if fd >= 0 and len(rel) > skip else None
                except OSError:
                    st = None
                if st is None or not is_reg(st.st_mode):
                    st = self._odd(rel)  # links, errors and non-files: the slow, careful way
                keys[i * KEY_SIZE : (i + 1) * KEY_SIZE] = pack_key(st)
                sizes[i] = st.st_size
        finally:
            if fd >= 0:
                os.close(fd)

    def _odd(self, rel: str) -> os.stat_result:
        """The stat of a path that is not a plain file in a readable folder: follow a link, or say why not.

        Its folder is inside the root (checked before); a link must be too.
        """
        full = f"{self.base}/{rel}"
        try:
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                if not inside(self.real_root, os.path.realpath(full)):
                    raise LockfileError(f"data file {rel!r}: resolves outside the project root")
                st = os.stat(full)
        except OSError as exc:
            raise DataError(f"{rel}: {os_reason(exc)}") from None
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                raise DataError(f"{rel}: expected a file, found a directory")
            raise DataError(f"{rel}: not a regular file (a FIFO, socket or device); expected a file")
        return st
