"""SPDX licence ids and expressions, rated the way the openness audit needs. No torch.

The tables are deliberately short and explicit: a licence repro does not know is
rated *not free* with a message saying so, rather than guessed. docs/openness.md
says where each list comes from; extend them there and here together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# OSI-approved licences (opensource.org/licenses) that the Debian FTP masters also
# accept as DFSG-free. These are the ones a training program or weights may use.
OSI_APPROVED: frozenset[str] = frozenset({
    "0BSD", "AFL-3.0", "AGPL-3.0-only", "AGPL-3.0-or-later", "Apache-2.0", "Artistic-2.0", "BSD-2-Clause",
    "BSD-3-Clause", "BSL-1.0", "ECL-2.0", "EPL-2.0", "EUPL-1.2", "GPL-2.0-only", "GPL-2.0-or-later",
    "GPL-3.0-only", "GPL-3.0-or-later", "ISC", "LGPL-2.1-only", "LGPL-2.1-or-later", "LGPL-3.0-only",
    "LGPL-3.0-or-later", "MIT", "MIT-0", "MPL-2.0", "NCSA", "OFL-1.1", "PostgreSQL", "Python-2.0",
    "UPL-1.0", "Unlicense", "Zlib",
})

# Open data and content licences: free to use, study, modify and share for any
# purpose (opendefinition.org conformant; accepted in Debian main). Not OSI-approved,
# because OSI approves software licences only.
OPEN_DATA: frozenset[str] = frozenset({
    "CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CDLA-Permissive-1.0",
    "CDLA-Permissive-2.0", "CDLA-Sharing-1.0", "ODbL-1.0", "ODC-By-1.0", "PDDL-1.0",
})

# Ids that mean "nobody said" rather than naming a licence.
UNDECLARED: frozenset[str] = frozenset({"NOASSERTION", "NONE", "unknown"})

# Hugging Face's `license:` values for the licences above (hf.co/docs/hub/repositories-licenses).
_HF_IDS: frozenset[str] = frozenset({
    "0bsd", "afl-3.0", "agpl-3.0", "apache-2.0", "artistic-2.0", "bsd-2-clause", "bsd-3-clause", "bsl-1.0",
    "ecl-2.0", "epl-2.0", "eupl-1.2", "gpl-2.0", "gpl-3.0", "isc", "lgpl-2.1", "lgpl-3.0", "mit", "mpl-2.0",
    "ncsa", "ofl-1.1", "postgresql", "unlicense", "zlib", "cc0-1.0", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
    "cc-by-sa-4.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "cdla-sharing-1.0", "odbl", "odc-by", "pddl",
})
_HF_RENAMES = {"odbl-1.0": "odbl", "odc-by-1.0": "odc-by", "pddl-1.0": "pddl"}

_TOKEN = re.compile(r"\s*(\(|\)|[A-Za-z0-9.+:-]+)")


@dataclass(frozen=True)
class Rating:
    """How one licence expression rates for one kind of component."""

    expression: str | None
    free: bool
    reason: str


def _tokens(expression: str) -> list[str]:
    pos, out = 0, []
    text = expression.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"licence {expression!r}: cannot parse near {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _evaluate(tokens: list[str], allowed: frozenset[str]) -> tuple[bool, list[str]]:
    """Recursive descent over `a AND (b OR c)`; returns (free, ids that are not allowed)."""

    def expr(i: int) -> tuple[bool, list[str], int]:
        ok, bad, i = term(i)
        while i < len(tokens) and tokens[i] == "OR":
            ok2, bad2, i = term(i + 1)
            ok, bad = ok or ok2, ([] if ok or ok2 else bad + bad2)
        return ok, bad, i

    def term(i: int) -> tuple[bool, list[str], int]:
        ok, bad, i = atom(i)
        while i < len(tokens) and tokens[i] == "AND":
            ok2, bad2, i = atom(i + 1)
            ok, bad = ok and ok2, bad + bad2
        return ok, bad, i

    def atom(i: int) -> tuple[bool, list[str], int]:
        if i >= len(tokens):
            raise ValueError("licence expression ends early")
        tok = tokens[i]
        if tok == "(":
            ok, bad, i = expr(i + 1)
            if i >= len(tokens) or tokens[i] != ")":
                raise ValueError("licence expression: unbalanced '('")
            return ok, bad, i + 1
        if tok in ("AND", "OR", ")", "WITH"):
            raise ValueError(f"licence expression: unexpected {tok!r}")
        ident, i = tok, i + 1
        if i < len(tokens) and tokens[i] == "WITH":  # an exception only adds permissions
            if i + 1 >= len(tokens):
                raise ValueError("licence expression: WITH needs an exception id")
            i += 2
        ok = ident in allowed
        return ok, ([] if ok else [ident]), i

    ok, bad, end = expr(0)
    if end != len(tokens):
        raise ValueError(f"licence expression: unexpected {tokens[end]!r}")
    return ok, bad


def rate(expression: str | None, kind: str) -> Rating:
    """Rate an SPDX expression for a component `kind`: 'code', 'data' or 'weights'.

    Code must be OSI-approved; data may also use open data licences; weights are
    data and code at once, so either list will do. `None` or NOASSERTION is not free.
    """
    allowed = OSI_APPROVED if kind == "code" else OSI_APPROVED | OPEN_DATA
    if expression is None or expression.strip() in UNDECLARED or not expression.strip():
        return Rating(expression, False, "no licence declared")
    try:
        ok, bad = _evaluate(_tokens(expression), allowed)
    except ValueError as exc:
        return Rating(expression, False, str(exc))
    if ok:
        return Rating(expression, True, "OSI-approved" if kind == "code" else "free")
    listed = ", ".join(sorted(set(bad)))
    wanted = "an OSI-approved licence" if kind == "code" else "an OSI-approved or open data licence"
    return Rating(expression, False, f"{listed}: not {wanted} on repro's list (docs/openness.md)")


def check_expression(expression: str) -> None:
    """Raise ValueError if `expression` is not SPDX expression syntax (ids are not checked)."""
    _evaluate(_tokens(expression), frozenset())


def hf_license(expression: str | None) -> tuple[str, str | None]:
    """The Hugging Face `license:` value, and `license_name` when it has to be 'other'."""
    if not expression or expression in UNDECLARED:
        return "unknown", None
    ident = re.sub(r"-(only|or-later)$", "", expression.strip()).lower()
    ident = _HF_RENAMES.get(ident, ident)
    if ident in _HF_IDS:
        return ident, None
    return "other", re.sub(r"[^a-z0-9.-]+", "-", expression.lower()).strip("-")
