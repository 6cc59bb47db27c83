"""Which files: expand patterns into sorted relative paths under a root. Never imports torch.

The path rules are `repro.source.filetree`'s: relative POSIX, inside the root
after symlinks, valid UTF-8, a regular file. Symlinks are followed (the bytes a
reader of the path gets are the bytes hashed) and recorded under the link's own
path; a link leaving the root, a loop or a dangling link is an error. Empty
directories are not data; `.git`, `.dvc` and `.repro` never are.

Built for a million files:
- each folder is listed once, through an open descriptor, and its names are
  sorted with a subfolder's name as "name/": walked depth-first in that order,
  the full paths come out in byte order, so no global sort of a million names;
- `locate_patterns` also takes each file's `lstat` during the walk, relative to
  the open folder, so hashing need not stat every file a second time: it reads
  each file through one descriptor and checks it with that descriptor's `fstat`
  (`hashfile.read_beneath`);
- each folder is opened beneath the root by its real path, one component at a
  time with `O_NOFOLLOW` (`repro.safeio.Beneath`): a folder swapped for a link
  after its path was checked is refused, never listed.
"""

from __future__ import annotations

import glob
import os
import stat
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path, PurePosixPath

from repro.errors import DataError, LockfileError
from repro.safeio import Beneath
from repro.source.filetree import SKIP_DIRS, checked_name, inside, os_reason, safe_relpath
from repro.source.statkey import KEY_SIZE, STAT_KEY, pack_key


@dataclass
class Located:
    """Sorted, unique relative paths of regular files; with `stats`, each one's packed stat key and size.

    `keys` holds `statkey.pack_key` of each file's stat (a link's target's),
    KEY_SIZE bytes a file in the order of `paths`: what the stat cache compares.
    """

    paths: list[str] = field(default_factory=list)
    keys: bytearray | None = None
    sizes: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]

    def add(self, rel: str, st: os.stat_result) -> None:
        self.paths.append(rel)
        if self.keys is not None:
            self.keys += pack_key(st)
            self.sizes.append(st.st_size)


def expand_patterns(root: Path, patterns: Iterable[str]) -> list[str]:
    """Expand files, directories (recursively) and globs under `root`.

    Returns sorted, unique relative POSIX paths of regular files. Symlinks, to
    files or directories, are followed and recorded under the link's own path;
    a link that resolves outside `root` is refused, as is a link loop. `.git`,
    `.dvc` and `.repro` directories are skipped inside directories. A pattern
    that matches no file is an error, so a typo cannot silently drop data.
    """
    return _expand(Path(root), patterns, Located()).paths


def locate_patterns(root: Path, patterns: Iterable[str]) -> Located:
    """`expand_patterns`, with every file's stat key and size taken on the way (for `hashtree.hash_tree`)."""
    return _expand(Path(root), patterns, Located(keys=bytearray()))


def _expand(root: Path, patterns: Iterable[str], found: Located) -> Located:
    real_root = os.path.realpath(root)
    opener: Beneath | None = None  # opened at the first folder to walk
    try:
        for pattern in patterns:
            safe_relpath(pattern, "pattern")
            matches = sorted(glob.glob(pattern, root_dir=root, recursive=True))
            if not matches:
                raise DataError(f"{pattern}: no such file under {root.name or root}/ (expected a file, directory or "
                                "glob)")
            before = len(found.paths)
            for m in matches:
                rel = PurePosixPath(Path(m).as_posix()).as_posix()
                kind, st = _kind(root, real_root, rel)
                if kind == "dir":
                    opener = opener or Beneath(str(root))
                    _walk(opener, "" if rel == "." else rel, found)
                else:
                    found.add(checked_name(rel), st)
            if len(found.paths) == before:
                raise DataError(f"{pattern}: matches only empty directories (empty directories are not data)")
    finally:
        if opener is not None:
            opener.close()
    return _sorted_unique(found)


def _sorted_unique(found: Located) -> Located:
    """`found` in byte order without repeats (one walk is sorted already; several patterns may overlap)."""
    paths = found.paths
    if all(a < b for a, b in pairwise(paths)):
        return found
    # Python's str order is the UTF-8 byte order (checked_name refused anything else).
    order = sorted(range(len(paths)), key=paths.__getitem__)
    out = Located(keys=None if found.keys is None else bytearray())
    size = KEY_SIZE
    for n, i in enumerate(order):
        if n and paths[i] == paths[order[n - 1]]:
            continue
        out.paths.append(paths[i])
        if found.keys is not None and out.keys is not None:
            out.keys += found.keys[i * size : (i + 1) * size]
            out.sizes.append(found.sizes[i])
    return out


def _kind(root: Path, real_root: str, rel: str) -> tuple[str, os.stat_result]:
    """('file' or 'dir', its stat) for `root/rel` after following links (which must stay inside `root`)."""
    full = os.path.join(root, rel)
    real = os.path.realpath(full)
    if not inside(real_root, real):
        raise LockfileError(f"{rel!r}: resolves outside the project root; copy it in or track it with DVC")
    try:
        st = os.stat(full)
    except FileNotFoundError:
        raise DataError(f"{rel}: broken symlink (its target does not exist)") from None
    except OSError as exc:
        raise DataError(f"{rel}: {os_reason(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        return "dir", st
    if stat.S_ISREG(st.st_mode):
        return "file", st
    raise DataError(f"{rel}: not a regular file (a FIFO, socket or device); expected a file")


class _Folder:
    """One folder of a walk: its names, sorted, still to visit, and a descriptor while it is visited.

    The descriptor is closed while a subfolder is walked and opened again after, so a
    deep tree holds one open folder, not one per level. `real` is the folder's real
    path, checked to be inside the root; it is opened beneath the root by that path.
    """

    def __init__(self, opener: Beneath, rel: str, real: str, ancestors: frozenset[str]) -> None:
        self.opener, self.rel, self.real, self.ancestors = opener, rel, real, ancestors
        self.prefix = f"{rel}/" if rel else ""
        self.file_links: dict[str, os.stat_result] = {}  # links to files: name -> the target's stat
        self.folder_links: dict[str, str] = {}  # links to folders: name -> real path
        self.fd = self._open()
        try:
            self.names = iter(self._list())
        except BaseException:
            self.close()
            raise

    def _open(self) -> int:
        real_root = self.opener.real_root
        try:
            return self.opener.folder(os.path.relpath(self.real, real_root) if self.real != real_root else "")
        except OSError as exc:
            raise DataError(f"{self.rel or '.'}/: cannot list ({exc.strerror})") from None

    def _list(self) -> list[str]:
        """Names to visit in full-path byte order: a folder (or a link to one) as "name/"."""
        names: list[str] = []
        try:
            entries = os.scandir(self.fd)
        except OSError as exc:
            raise DataError(f"{self.rel or '.'}/: cannot list ({exc.strerror})") from None
        with entries:
            for e in entries:
                name = e.name
                if e.is_file(follow_symlinks=False):
                    names.append(name)
                elif e.is_dir(follow_symlinks=False):
                    if name not in SKIP_DIRS:
                        names.append(name + "/")
                elif e.is_symlink():
                    rel = self.prefix + name
                    root = self.opener.real_root
                    kind, target = _kind(Path(root), root, rel)
                    if kind == "file":
                        self.file_links[name] = target
                        names.append(name)
                    else:
                        self.folder_links[name] = os.path.realpath(os.path.join(root, rel))
                        names.append(name + "/")
                else:
                    raise DataError(f"{self.prefix}{name}: not a regular file (a FIFO, socket or device); "
                                    "expected a file")
        _check_names(self.prefix, names)
        names.sort()
        return names

    def next_folder(self, found: Located) -> _Folder | None:
        """Add this folder's files up to its next subfolder, and open that; None when done."""
        if self.fd < 0:
            self.fd = self._open()
        prefix, fd = self.prefix, self.fd
        lstat, is_reg, pack = os.lstat, stat.S_ISREG, STAT_KEY.pack
        paths, keys, sizes = found.paths, found.keys, found.sizes  # Located.add, inlined: a million calls
        for name in self.names:
            if name[-1] == "/":
                name = name[:-1]
                real = self.folder_links.get(name) or os.path.join(self.real, name)
                if real in self.ancestors:
                    raise DataError(f"{prefix}{name}: symlink loop (points at a directory that contains it)")
                self.close()
                return _Folder(self.opener, prefix + name, real, self.ancestors | {real})
            if keys is None:
                paths.append(prefix + name)
                continue
            try:
                st = self.file_links.get(name) or lstat(name, dir_fd=fd)
            except OSError as exc:
                raise DataError(f"{prefix}{name}: {os_reason(exc)}") from None
            if not is_reg(st.st_mode):  # replaced since it was listed
                raise DataError(f"{prefix}{name}: not a regular file (a FIFO, socket or device); expected a file")
            paths.append(prefix + name)
            keys += pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)  # pack_key, inlined
            sizes.append(st.st_size)
        return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _walk(opener: Beneath, top: str, found: Located) -> None:
    """Add every regular file below `top`, in byte order; follow links to folders, refuse loops."""
    top_real = os.path.realpath(os.path.join(opener.real_root, top))
    stack = [_Folder(opener, top, top_real, frozenset({top_real}))]
    try:
        while stack:
            child = stack[-1].next_folder(found)
            if child is None:
                stack.pop().close()
            else:
                stack.append(child)
    finally:
        for folder in stack:
            folder.close()


def _check_names(prefix: str, names: list[str]) -> None:
    """`checked_name` of every path in one folder, in one pass over their joined text."""
    joined = prefix + "\0".join(names)
    try:
        joined.encode("utf-8")
        bad = "\\" in joined or "\n" in joined
    except UnicodeEncodeError:
        bad = True
    if bad:
        for name in names:
            checked_name(prefix + name.rstrip("/"))

