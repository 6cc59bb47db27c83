"""The docs stand alone and stay true: what they name exists, and the exit-code table is one table.

Fast and torch-free: files are read as text, `repro --help` is parsed in-process.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from repro.cli import COMMANDS, main
from repro.errors import EXIT_CODES

DOCS = sorted([REPO / "README.md", REPO / "BENCHMARKS.md", *(REPO / "docs").glob("*.md"),
               *(REPO / "examples").glob("*/README.md")])
# `repro/<path>` as written in prose or code blocks (not a suffix of a longer path).
REPRO_PATH = re.compile(r"(?<![\w./-])repro/[\w./-]*\w")
# `repro.a.b.Name` written as a whole code span: a module, or a name defined in one.
DOTTED = re.compile(r"`(repro(?:\.[A-Za-z_]\w*)+)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_docs_reference_nothing_outside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text and "FACTS.md" not in text and "/work/" not in text


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_repro_path_named_in_the_docs_exists(doc: Path) -> None:
    named = {m.group(0).rstrip(".") for m in REPRO_PATH.finditer(doc.read_text(encoding="utf-8"))}
    missing = sorted(p for p in named if "*" not in p and not (REPO / p).exists())
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def _resolves(dotted: str) -> bool:
    """`repro.a.b` is a module (file or package); `repro.a.b.Name` a name defined at its top level."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:i])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            break
    else:
        return False
    rest = parts[i:]
    if not rest:
        return True
    source = module.read_text(encoding="utf-8")
    return re.search(rf"^(?:class|def)\s+{rest[0]}\b|^{rest[0]}\s*[:=]", source, re.M) is not None


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_repro_module_named_in_the_docs_exists(doc: Path) -> None:
    named = {m.group(1) for m in DOTTED.finditer(doc.read_text(encoding="utf-8"))}
    stale = sorted(d for d in named if not _resolves(d))
    assert not stale, f"{doc.name} names modules or objects that do not exist: {stale}"


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_relative_links_resolve(doc: Path) -> None:
    links = [m.group(1) for m in LINK.finditer(doc.read_text(encoding="utf-8"))]
    broken = sorted(x for x in links if "://" not in x and not (doc.parent / x).exists())
    assert not broken, f"{doc.name} links to files that do not exist: {broken}"


def test_the_readme_exit_code_table_is_errors_exit_codes() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", section, re.M)
    assert {int(code): text for code, text in rows} == EXIT_CODES
    assert [int(code) for code, _ in rows] == list(EXIT_CODES), "same order as repro --help"


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in COMMANDS)], ids=" ".join)
def test_help_prints_the_same_exit_code_table(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as done:  # argparse's own --help
        code = int(done.code or 0)
    assert code == 0
    epilog = capsys.readouterr().out.split("exit codes:\n", 1)[1]
    rows = re.findall(r"^ +(\d+)  (.+)$", epilog.split("\n\n", 1)[0], re.M)  # `repro train --help` goes on
    assert {int(code): text for code, text in rows} == EXIT_CODES
