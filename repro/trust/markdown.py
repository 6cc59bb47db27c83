"""Values written into a model card's Markdown, escaped so they read as text and nothing else. No torch.

Everything on a card comes from a lock, a config or files beside them, and any
of those can be a stranger's. A `data_description` holding `| Reproducible |
**yes** |` must not become a second verdict table, `<img src=...>` must not
become a beacon, and an ESC byte must not reach a terminal that `cat`s the
card. So every value goes through one of these:

- `text`: prose and table cells: control characters shown escaped (as the CLI
  shows them), HTML's `<`, `>` and `&` as entities, and every other character
  Markdown gives a meaning to backslash-escaped, so the value renders literally;
- `code`: an inline code span, fenced with one more backtick than the value holds
  (CommonMark), control characters escaped; HTML is not interpreted in a span;
- `fenced`: a fenced block (the config YAML), fenced the same way.
"""

from __future__ import annotations

import re

from repro.safeio import printable

# Characters that mean something anywhere in a line: emphasis, code, links and images, tables,
# strikethrough, and the backslash itself. HTML's three get entities instead.
_INLINE = re.compile(r"([\\`*_\[\]|~])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# What means something only at the start of a line: a heading, a list item, a setext underline.
_LINE_START = re.compile(r"^(\s*)([#+\-=]|\d+(?=[.)]))")
_TICKS = re.compile(r"`+")


def text(value: object) -> str:
    """`value` as literal Markdown text on one line (newlines shown as `\\n`, like every control character)."""
    shown = printable(str(value))
    escaped = "".join(_HTML.get(c, c) for c in _INLINE.sub(r"\\\1", shown))
    return _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped, count=1)


def code(value: object, cell: bool = False) -> str:
    """`value` as an inline code span that nothing in it can close; `cell`: inside a table row, where GFM
    splits on `|` even within a span unless it is escaped."""
    shown = printable(str(value))
    fence = "`" * (_longest_run(shown) + 1)
    pad = " " if shown.startswith("`") or shown.endswith("`") or not shown.strip() else ""
    span = f"{fence}{pad}{shown}{pad}{fence}"
    return span.replace("|", "\\|") if cell else span


def fenced(body: str, info: str = "") -> list[str]:
    """A fenced code block holding `body` (line by line, control characters escaped)."""
    lines = [printable(line) for line in body.rstrip("\n").split("\n")]
    fence = "`" * max(3, max((_longest_run(line) for line in lines), default=0) + 1)
    return [f"{fence}{info}", *lines, fence]


def _longest_run(s: str) -> int:
    return max((len(m.group(0)) for m in _TICKS.finditer(s)), default=0)
