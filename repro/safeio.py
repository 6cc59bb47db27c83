"""Reading bytes a stranger chose, and printing them: the one place for both. No torch.

Every file repro reads from a lock's folder, a data tree or a checkpoint may be
hostile (docs/security.md). `read_bytes` opens it without blocking (a FIFO
cannot hang us), without following a final symlink unless asked (a link cannot
point us at /dev/zero or /etc/passwd), insists on a regular file and refuses one
over a size cap before reading a byte. `open_beneath` is the one way to open a
file a stranger named by a path relative to the project root: no component may be
a symbolic link (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS where the kernel has
it, else O_NOFOLLOW on every component), so nothing outside the root is ever
opened, and whatever is read or hashed comes through that one descriptor
(`read_fd`, `copy_beneath`; hashing: `repro.source.hashing.digest_fd`): a file swapped after the check is never
the one read; `Beneath` applies the same rule to a whole tree, opening each
folder once. `loads` parses JSON strictly: no duplicate keys, no NaN or
Infinity, no lone surrogate, a bounded depth and bounded integers, so nothing
past the parser can meet a value the format does not allow. `printable` escapes
control characters in anything shown to a person, so a path cannot rewrite the
terminal.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import math
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Literal

from repro.errors import LockfileError, UserInputError
from repro.records import JsonObject, JsonValue

# Caps, generous but finite (documented in docs/security.md, "Caps").
MAX_JSON_BYTES = 64 << 20  # a lock, run.json, verification record, manifest or state.json
MAX_JSON_DEPTH = 64  # nesting of objects and arrays
MAX_INT_DIGITS = 40  # an unsigned 128-bit integer has 39 digits; sizes, steps and seeds need far fewer
MAX_SOURCE_BYTES = 16 << 20  # one project source file compiled from the bytes that were hashed

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")


def open_regular(path: str | Path, what: str, error: type[UserInputError] = UserInputError,
                 follow_links: bool = False, root: str | Path | None = None,
                 links: Links = "refuse") -> tuple[int, os.stat_result]:
    """An fd open for reading on a regular file, and its stat; `error` naming `path` otherwise.

    O_NONBLOCK: a FIFO opens at once (and is then refused) instead of waiting for a writer.
    O_NOFOLLOW (unless `follow_links`): a final symlink is refused, never followed.
    With `root`, `path` (relative to it, or absolute beneath it) is opened by `open_beneath`:
    no component at all may be a link (`links="inside"`: links that stay inside are followed).
    """
    if root is not None:
        return open_beneath(root, _relative(path, root, what, error), what, error, links)
    flags = _READ | (0 if follow_links else _NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _open_error(exc, str(path), what, error, follow_links) from None
    return _regular(fd, str(path), what, error)


def read_bytes(path: str | Path, what: str, cap: int = MAX_JSON_BYTES, error: type[UserInputError] = UserInputError,
               follow_links: bool = False, root: str | Path | None = None, links: Links = "refuse") -> bytes:
    """All bytes of a regular file of at most `cap` bytes (see `open_regular`)."""
    fd, st = open_regular(path, what, error, follow_links, root, links)
    try:
        return read_fd(fd, st, str(path), what, cap, error)
    finally:
        os.close(fd)


def read_fd(fd: int, st: os.stat_result, shown: str, what: str, cap: int = MAX_JSON_BYTES,
            error: type[UserInputError] = UserInputError) -> bytes:
    """All bytes of an open regular file, refused over `cap` before a byte is read (and if it grows past it)."""
    if st.st_size > cap:
        raise error(f"{printable(shown)}: {st.st_size} bytes is over the {cap}-byte cap for a {what}")
    chunks, total = [], 0
    try:
        while chunk := os.read(fd, min(cap + 1 - total, 1 << 20)):  # never more than cap+1, even if it grows
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise error(f"{printable(shown)}: grew past the {cap}-byte cap for a {what} while being read")
    except OSError as exc:
        raise error(f"{printable(shown)}: cannot read {what} ({exc.strerror})") from None
    return b"".join(chunks)


# ---- A stranger's file beneath the project root ---------------------------------------------------

Links = Literal["refuse", "inside"]
_READ = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# openat2(2): RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH (linux/openat2.h).
_RESOLVE = 0x02 | 0x04 | 0x08
_LINKED = {errno.ELOOP, errno.EMLINK, errno.ENOTDIR}  # what O_NOFOLLOW gives for a link (EMLINK: BSDs)
_SYS_OPENAT2 = 437  # the same number on every architecture (the unified syscall table, Linux 5.6)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_beneath(root: str | Path, rel: str, what: str, error: type[UserInputError] = UserInputError,
                 links: Links = "refuse") -> tuple[int, os.stat_result]:
    """An fd open for reading on the regular file `root/rel`, and its stat; nothing outside `root` is opened.

    `rel` is relative, without `..`. With `links="refuse"` no component may be a
    symbolic link: openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS where the
    kernel has it, else O_NOFOLLOW on every component. With `links="inside"` a
    link is followed if its target stays inside the root: the path is resolved
    first, then its resolved form opened the same way, so a link swapped in
    afterwards fails instead of being followed. Read, hash or copy through the
    returned fd (`read_fd`, `repro.source.hashing.digest_fd`): reopening the path by name would undo all this.
    """
    shown = printable(rel)
    parts = _parts(rel, what, error)
    real_root = os.path.realpath(root)
    if links == "inside":
        real = os.path.realpath(os.path.join(real_root, *parts))
        if not _inside(real_root, real):
            raise error(f"{shown}: resolves outside the project root; a {what} must be a file inside it")
        parts = os.path.relpath(real, real_root).split(os.sep) if real != real_root else []
        if not parts:
            raise error(f"{shown}: a directory; a {what} must be a regular file")
    try:
        fd = _openat2(real_root, "/".join(parts))
        if fd is None:
            fd = _open_each(real_root, parts)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR) and _has_link(real_root, parts):
            raise error(f"{shown}: goes through a symbolic link; a {what} must be a regular file inside the "
                        "project root, reached without links") from None
        raise _open_error(exc, rel, what, error, True) from None
    return _regular(fd, rel, what, error)


def copy_beneath(root: str | Path, rel: str, dest: Path, size: int, what: str,
                 error: type[UserInputError] = UserInputError, links: Links = "refuse") -> str:
    """Copy `root/rel` (opened by `open_beneath`) to `dest` if it is `size` bytes long; return its sha256.

    The size is checked on the descriptor before a byte is read (a sparse 1 GB
    file recorded as 4 KB is refused at once, with `error`), and no more than
    `size` bytes are ever read; the digest is computed while the bytes stream to
    a temporary file beside `dest`, which gets its name only once complete, so the
    caller learns the digest before it acts on the copy. Nothing partial is left.
    """
    fd, st = open_beneath(root, rel, what, error, links)
    try:
        if st.st_size != size:
            raise error(f"{printable(rel)}: {st.st_size} bytes, the lock records {size}; not copied")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        try:
            h, copied = hashlib.sha256(), 0
            for chunk in _chunks(fd, size + 1):
                copied += len(chunk)
                if copied > size:
                    raise error(f"{printable(rel)}: grew past the recorded {size} bytes while being copied")
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(tmp_fd, view):]
            if copied != size:
                raise error(f"{printable(rel)}: shrank to {copied} bytes while being copied; the lock records {size}")
            os.fsync(tmp_fd)
            os.close(tmp_fd)
            tmp_fd = -1
            os.replace(tmp, dest)
        finally:
            if tmp_fd >= 0:
                os.close(tmp_fd)
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return h.hexdigest()
    finally:
        os.close(fd)


def _chunks(fd: int, limit: int) -> Iterator[bytes]:
    offset = 0
    while offset < limit and (chunk := os.pread(fd, min(1 << 20, limit - offset), offset)):
        offset += len(chunk)
        yield chunk


def _parts(rel: str, what: str, error: type[UserInputError]) -> list[str]:
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\x00" in rel:
        raise error(f"{printable(str(rel))}: not a relative path; a {what} must be named relative to the project root")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise error(f"{printable(rel)}: escapes the project root or is not a plain relative path "
                    f"(expected a/b/c, without '..'); a {what} must be inside the root")
    return parts


def _relative(path: str | Path, root: str | Path, what: str, error: type[UserInputError]) -> str:
    """`path` relative to `root`, as given (never resolved: links are judged by `open_beneath`)."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return Path(text).as_posix()
    base = os.path.abspath(root)
    if not _inside(base, os.path.abspath(text)) or os.path.abspath(text) == base:
        raise error(f"{printable(text)}: outside the project root {printable(base)}; a {what} must be inside it")
    return Path(os.path.relpath(os.path.abspath(text), base)).as_posix()


def _inside(real_root: str, real: str) -> bool:
    return real.startswith(real_root.rstrip(os.sep) + os.sep)


@cache
def _syscall() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None


_OPENAT2_MISSING: list[bool] = []  # set once the kernel said ENOSYS (or seccomp said EPERM)


def _openat2(real_root: str, rel: str) -> int | None:
    """openat2(root, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS); None where the kernel lacks it."""
    syscall = _syscall()
    if syscall is None or _OPENAT2_MISSING or not hasattr(os, "O_DIRECTORY"):
        return None
    dirfd = os.open(real_root, _DIR)
    try:
        how = _OpenHow(_READ | _NOFOLLOW, 0, _RESOLVE)
        for _ in range(8):  # EAGAIN: a concurrent rename; the kernel asks us to try again
            fd = syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), os.fsencode(rel),
                         ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
            if fd >= 0:
                return int(fd)
            err = ctypes.get_errno()
            if err in (errno.ENOSYS, errno.EPERM):
                _OPENAT2_MISSING.append(True)
                return None
            if err != errno.EAGAIN:
                raise OSError(err, os.strerror(err), rel)
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), rel)
    finally:
        os.close(dirfd)


def _open_each(real_root: str, parts: list[str]) -> int:
    """The fallback: every folder opened with O_NOFOLLOW relative to the one before, then the file."""
    dirfd = os.open(real_root, _DIR)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, _DIR | _NOFOLLOW, dir_fd=dirfd)
            os.close(dirfd)
            dirfd = nxt
        return os.open(parts[-1], _READ | _NOFOLLOW, dir_fd=dirfd)
    finally:
        os.close(dirfd)


def _has_link(real_root: str, parts: list[str]) -> bool:
    """Whether some component of the path is a symbolic link (to word the error)."""
    path = real_root
    for part in parts:
        path = os.path.join(path, part)
        if os.path.islink(path):
            return True
        if not os.path.isdir(path):
            return False
    return False


def _open_error(exc: OSError, path: str, what: str, error: type[UserInputError], followed: bool) -> UserInputError:
    shown = printable(path)
    if isinstance(exc, FileNotFoundError):
        return error(f"{shown}: no such {what}")
    if exc.errno == errno.ELOOP and not followed:
        return error(f"{shown}: is a symbolic link; a {what} must be a regular file")
    return error(f"{shown}: cannot read {what} ({exc.strerror})")


def _regular(fd: int, path: str, what: str, error: type[UserInputError]) -> tuple[int, os.stat_result]:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise error(f"{printable(path)}: {kind}; a {what} must be a regular file")
    return fd, st



class Beneath:
    """`open_beneath`'s rule for a whole tree (a million files): the root opened once, each folder once.

    The walk (`repro.source.walk`) follows symbolic links that stay inside the root
    and records files under the link's own path; between that walk and the read, a
    stranger's tree could swap a folder or a file for a link to somewhere else. So
    nothing here opens a path by name from the top: the real root is opened once
    (the user chose it, links and all), and every component below it is opened
    relative to its parent's descriptor with `O_NOFOLLOW` (folders also
    `O_DIRECTORY`, files also `O_NONBLOCK`). A link met on the way is resolved
    once, checked to stay inside the root, and its target opened the same way
    (`links="inside"`); a link that appears after that check makes the open fail
    instead of being followed. Hash through the descriptor that was opened
    (`repro.source.hashfile.read_beneath`), never through a second open by name.

    Unlike `open_beneath` it neither re-opens the root nor walks the whole path
    for each file: a file is opened relative to its folder's open descriptor, one
    `openat` a file. Safe to share between threads (it holds only the root's
    descriptor, which `openat` reads and never moves). Close it, or use it as a
    context manager.
    """

    def __init__(self, root: str | Path) -> None:
        self.real_root = os.path.realpath(root)
        self.fd = os.open(self.real_root, _DIR)

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
            return os.open(name, _READ | _NOFOLLOW, dir_fd=folder_fd)
        except OSError as exc:
            if exc.errno not in _LINKED:
                raise
        parent, _, base = self._real(folder + name).rpartition("/")
        fd = self._chain(parent)
        try:
            return os.open(base, _READ | _NOFOLLOW, dir_fd=fd)
        finally:
            os.close(fd)

    def _chain(self, rel: str) -> int:
        """Open `rel` below the root one component at a time, each with O_NOFOLLOW."""
        if ".." in rel.split("/"):  # never produced by the callers; refused all the same
            raise LockfileError(f"{printable(rel)!r}: escapes the project root ('..')")
        fd = os.open(".", _DIR | _NOFOLLOW, dir_fd=self.fd)
        try:
            for part in rel.split("/"):
                if part:
                    child = os.open(part, _DIR | _NOFOLLOW, dir_fd=fd)
                    os.close(fd)
                    fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _real(self, rel: str) -> str:
        """`rel` with its links resolved, relative to the real root; LockfileError if it leads outside."""
        real = os.path.realpath(os.path.join(self.real_root, rel.rstrip("/")))
        if real == self.real_root:
            return ""
        if not _inside(self.real_root, real):
            raise LockfileError(f"{printable(repr(rel.rstrip('/')))}: resolves outside the project root; copy it "
                                "in or track it with DVC")
        return os.path.relpath(real, self.real_root)


def loads(raw: bytes, where: str, error: type[UserInputError] = UserInputError) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity, depth and integer size bounded."""
    shown = printable(where)
    depth = _depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{shown}: JSON nested {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed")

    def pairs(items: list[tuple[str, JsonValue]]) -> JsonObject:
        out: JsonObject = {}
        for key, value in items:
            if key in out:
                raise _Refused(f"duplicate key {printable(repr(key))}")
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise _Refused(f"{name} is not JSON")

    def integer(text: str) -> int:
        if len(text.lstrip("-")) > MAX_INT_DIGITS:
            raise _Refused(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
        return int(text)

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise _Refused(f"the number {text[:20]} overflows to infinity")
        return value

    try:
        text = raw.decode("utf-8")
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=constant, parse_int=integer,
                           parse_float=number)
        if _SURROGATE_ESCAPE.search(raw):  # rare: only then walk the value for a lone one
            _refuse_lone_surrogates(value)
        return value
    except UnicodeDecodeError as exc:
        raise error(f"{shown}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{shown}: not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})") from None
    except _Refused as exc:
        raise error(f"{shown}: refused: {exc}") from None
    except RecursionError:  # cannot happen below MAX_JSON_DEPTH; kept so it never becomes a traceback
        raise error(f"{shown}: JSON nested too deeply") from None


def read_json(path: str | Path, what: str, error: type[UserInputError] = UserInputError,
              follow_links: bool = False, root: str | Path | None = None,
              links: Links = "refuse") -> tuple[Any, bytes]:
    """`loads(read_bytes(path))`: the value and the very bytes it was parsed from (to hash them).

    With `root`, `path` is opened beneath it (see `open_regular`)."""
    raw = read_bytes(path, what, MAX_JSON_BYTES, error, follow_links, root, links)
    return loads(raw, str(path), error), raw


class _Refused(ValueError):
    pass


# A \uD800-\uDFFF escape: half of a pair, or (alone) a string no UTF-8 output can hold.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def has_lone_surrogate(text: str) -> bool:
    """Whether `text` holds a lone UTF-16 surrogate (no UTF-8 encoding exists for it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse_lone_surrogates(value: Any) -> None:
    """Raise _Refused naming the first string (key or value) that holds a lone surrogate."""
    found = lone_surrogate_at(value)
    if found is not None:
        raise _Refused(f"a lone surrogate (\\ud800-\\udfff) in {found}; text must be valid Unicode")


def lone_surrogate_at(value: Any) -> str | None:
    """Where in a parsed value (JSON, a resolved config) the first lone surrogate is, or None.

    "the string at a.b[0]" or "a key under a.b"; no UTF-8 output can hold such a string.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, str):
            if has_lone_surrogate(node):
                return f"the string at {printable(where or '(top level)')}"
        elif isinstance(node, dict):
            for key, item in node.items():
                if isinstance(key, str) and has_lone_surrogate(key):
                    return f"a key under {printable(where or '(top level)')}"
                stack.append((f"{where}.{key}" if where else str(key), item))
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(node))
    return None


def _depth(raw: bytes) -> int:
    """Deepest nesting of [ and { outside strings; cheap enough for a 64 MiB file."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    depth = deepest = 0
    for b in brackets:
        if b in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}


def printable(text: str) -> str:
    """`text` with control and bidi-format characters escaped, for every human-readable output.

    A path or value from a lock can hold `\\r`, terminal escape sequences or
    right-to-left overrides; printed raw they could overwrite a line (a fake
    "identical:") or hide the rest of a report.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in text)


def _escape(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    if unicodedata.category(c) in ("Zs",):  # odd spaces are harmless
        return c
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
