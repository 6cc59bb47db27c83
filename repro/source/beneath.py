"""Open a tree's folders and files beneath its root without following a link on the way. No torch.

The walk (`repro.source.walk`) follows symbolic links that stay inside the root
and records files under the link's own path. Between that walk and the moment a
file is read, a stranger's tree could swap a folder or a file for a link to
somewhere else (docs/security.md). So nothing here opens a path by name from the
top: the real root is opened once (the user chose it, links and all), and every
component below it is opened relative to its parent's descriptor with
`O_NOFOLLOW` (folders also `O_DIRECTORY`, files also `O_NONBLOCK`). A link met
on the way is resolved once, checked to stay inside the root, and its target is
opened the same way; a link that appears after that check makes the open fail
instead of being followed. Whatever is hashed is read through the descriptor
that was opened this way, never through a second open by name.
"""

from __future__ import annotations

import errno
import os

from repro.errors import LockfileError
from repro.source.filetree import inside

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC | _NOFOLLOW
# O_NONBLOCK: a FIFO swapped in opens at once (and is refused by its stat) instead of waiting for a writer.
OPEN_FILE = os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC | _NOFOLLOW
_LINKED = {errno.ELOOP, errno.EMLINK, errno.ENOTDIR}  # what O_NOFOLLOW gives for a link (EMLINK: BSDs)


class Beneath:
    """One root, open; folders and files under it opened component by component, never through a link.

    Safe to share between threads: it holds only the root's descriptor, which
    `openat` reads and never moves. Close it (or use it as a context manager)
    when done.
    """

    def __init__(self, root: str) -> None:
        self.real_root = os.path.realpath(root)
        self.fd = os.open(self.real_root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Beneath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def folder(self, rel: str) -> int:
        """A new descriptor on folder `rel` ('' or 'a/b', as recorded); a link on the way is resolved and checked.

        Raises OSError (missing, not a folder, unreadable) or LockfileError (leads outside the root).
        """
        try:
            return self._chain(rel)
        except OSError as exc:
            if exc.errno not in _LINKED:
                raise
        return self._chain(self._real(rel))

    def file(self, folder_fd: int, folder: str, name: str) -> int:
        """A new descriptor on file `name` in the open folder `folder_fd` (which is `folder`, as recorded).

        A link to a file inside the root is followed by resolving it once and
        opening its target beneath the root; never by the kernel.
        """
        try:
            return os.open(name, OPEN_FILE, dir_fd=folder_fd)
        except OSError as exc:
            if exc.errno not in _LINKED:
                raise
        parent, _, base = self._real(folder + name).rpartition("/")
        fd = self._chain(parent)
        try:
            return os.open(base, OPEN_FILE, dir_fd=fd)
        finally:
            os.close(fd)

    def _chain(self, rel: str) -> int:
        """Open `rel` below the root one component at a time, each with O_NOFOLLOW."""
        if ".." in rel.split("/"):  # never produced by the callers; refused all the same
            raise LockfileError(f"{rel!r}: escapes the project root ('..')")
        fd = os.open(".", OPEN_DIR, dir_fd=self.fd)
        try:
            for part in rel.split("/"):
                if part:
                    child = os.open(part, OPEN_DIR, dir_fd=fd)
                    os.close(fd)
                    fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _real(self, rel: str) -> str:
        """`rel` with its links resolved, relative to the real root; LockfileError if it leads outside."""
        real = os.path.realpath(os.path.join(self.real_root, rel.rstrip("/")))
        if not inside(self.real_root, real):
            raise LockfileError(f"{rel.rstrip('/')!r}: resolves outside the project root; copy it in or track it "
                                "with DVC")
        return os.path.relpath(real, self.real_root) if real != self.real_root else ""
