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
- `fenced`: a fenced block, fenced the same way;
- `yaml_lines`: a config as YAML whose every string that holds a character
  Markdown or HTML gives a meaning to is a JSON-escaped double-quoted scalar
  (`"\\u003cimg ..."`): the same YAML value, with none of those characters in
  the file for a careless renderer to act on.
"""

from __future__ import annotations

import json
import re
from typing import Any

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
    splits on `|` even within a span unless it is escaped. A value holding `<`, `>` or `&` is written as
    `text` instead: a span would show an entity literally, and the raw `<img` must not reach the file."""
    shown = printable(str(value))
    if set(shown) & set(_HTML):
        return text(value)
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


# In YAML, written as \uXXXX inside a double-quoted scalar: HTML's characters, a table's pipe, emphasis, backtick.
_RISKY = "<>&|*`"
_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9 _./+-]*(?<! )$")


def yaml_lines(node: Any, indent: int = 0) -> list[str]:
    """`node` (JSON-shaped: mappings sorted by key) as block-style YAML lines, strings escaped as above."""
    pad = " " * indent
    if isinstance(node, dict):
        if not node:
            return [f"{pad}{{}}"]
        out = []
        for key in sorted(node, key=str):
            value = node[key]
            if isinstance(value, (dict, list)) and value:
                out += [f"{pad}{_scalar(key)}:", *yaml_lines(value, indent + 2)]
            else:
                out.append(f"{pad}{_scalar(key)}: {_flow(value)}")
        return out
    if isinstance(node, list):
        out = []
        for item in node:
            if isinstance(item, (dict, list)) and item:
                inner = yaml_lines(item, indent + 2)
                out += [f"{pad}- {inner[0].lstrip()}", *inner[1:]]
            else:
                out.append(f"{pad}- {_flow(item)}")
        return out or [f"{pad}[]"]
    return [f"{pad}{_flow(node)}"]


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    text_ = str(value)
    if _PLAIN.match(text_) and text_.lower() not in ("null", "true", "false", "yes", "no", "on", "off", "~") \
            and not _looks_numeric(text_):
        return text_
    quoted = json.dumps(text_, ensure_ascii=True)  # a JSON string is a YAML double-quoted scalar
    return "".join(f"\\u{ord(c):04x}" if c in _RISKY else c for c in quoted)


def _float(value: float) -> str:
    """A float as YAML 1.1 reads it back: `1.0e-05` (PyYAML wants the dot), `.inf`, `.nan`."""
    if value != value:
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    text_ = repr(value)
    mantissa, e, exponent = text_.partition("e")
    return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text_


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
