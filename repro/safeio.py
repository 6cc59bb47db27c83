"""Reading bytes a stranger chose, and printing them: the one place for both. No torch.

Every file repro reads from a lock's folder, a data tree or a checkpoint may be
hostile (docs/security.md). `read_bytes` opens it without blocking (a FIFO
cannot hang us), without following a final symlink unless asked (a link cannot
point us at /dev/zero or /etc/passwd), insists on a regular file and refuses one
over a size cap before reading a byte. `loads` parses JSON strictly: no duplicate
keys, no NaN or Infinity, a bounded depth and bounded integers, so nothing past
the parser can meet a value the format does not allow. `printable` escapes
control characters in anything shown to a person, so a path cannot rewrite the
terminal.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import unicodedata
from pathlib import Path
from typing import Any

from repro.errors import UserInputError

# Caps, generous but finite (documented in docs/security.md, "Caps").
MAX_JSON_BYTES = 64 << 20  # a lock, run.json, verification record, manifest or state.json
MAX_JSON_DEPTH = 64  # nesting of objects and arrays
MAX_INT_DIGITS = 40  # an unsigned 128-bit integer has 39 digits; sizes, steps and seeds need far fewer
MAX_TENSOR_FILE_BYTES = 16 << 30  # a weights file read whole to compare tensor by tensor

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")


def open_regular(path: str | Path, what: str, error: type[UserInputError] = UserInputError,
                 follow_links: bool = False) -> tuple[int, os.stat_result]:
    """An fd open for reading on a regular file, and its stat; `error` naming `path` otherwise.

    O_NONBLOCK: a FIFO opens at once (and is then refused) instead of waiting for a writer.
    O_NOFOLLOW (unless `follow_links`): a final symlink is refused, never followed.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow_links else _NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{printable(str(path))}: no such {what}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise error(f"{printable(str(path))}: is a symbolic link; a {what} must be a regular file") from None
        raise error(f"{printable(str(path))}: cannot read {what} ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise error(f"{printable(str(path))}: {kind}; a {what} must be a regular file")
    return fd, st


def read_bytes(path: str | Path, what: str, cap: int = MAX_JSON_BYTES, error: type[UserInputError] = UserInputError,
               follow_links: bool = False) -> bytes:
    """All bytes of a regular file of at most `cap` bytes (see `open_regular`)."""
    fd, st = open_regular(path, what, error, follow_links)
    try:
        if st.st_size > cap:
            raise error(f"{printable(str(path))}: {st.st_size} bytes is over the {cap}-byte cap for a {what}")
        chunks, total = [], 0
        while chunk := os.read(fd, min(cap + 1 - total, 1 << 20)):  # never more than cap+1, even if it grows
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise error(f"{printable(str(path))}: grew past the {cap}-byte cap for a {what} while being read")
    except OSError as exc:
        raise error(f"{printable(str(path))}: cannot read {what} ({exc.strerror})") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def loads(raw: bytes, where: str, error: type[UserInputError] = UserInputError) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity, depth and integer size bounded."""
    shown = printable(where)
    depth = _depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{shown}: JSON nested {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
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
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant, parse_int=integer,
                          parse_float=number)
    except UnicodeDecodeError as exc:
        raise error(f"{shown}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{shown}: not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})") from None
    except _Refused as exc:
        raise error(f"{shown}: refused: {exc}") from None
    except RecursionError:  # cannot happen below MAX_JSON_DEPTH; kept so it never becomes a traceback
        raise error(f"{shown}: JSON nested too deeply") from None


def read_json(path: str | Path, what: str, error: type[UserInputError] = UserInputError,
              follow_links: bool = False) -> tuple[Any, bytes]:
    """`loads(read_bytes(path))`: the value and the very bytes it was parsed from (to hash them)."""
    raw = read_bytes(path, what, MAX_JSON_BYTES, error, follow_links)
    return loads(raw, str(path), error), raw


class _Refused(ValueError):
    pass


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
