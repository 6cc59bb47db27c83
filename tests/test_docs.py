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


# The README's claims about the CLI, each checked against what the CLI does (issue 30).

README = REPO / "README.md"


def _readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.mark.slow
def test_fp16_on_the_cpu_is_exit_3_as_the_readme_says(tmp_path: Path) -> None:
    from conftest import run_repro

    text = " ".join(_readme().split())
    assert "fp16 exits 3 on the CPU" in text and "fp16 is refused on the CPU (exit 3" in text
    assert "fp32, bf16 and fp16 all run" not in text
    r = run_repro(["train", "--quiet", "build.precision=fp16", "trainer.max_steps=1", "out_dir=o"], cwd=tmp_path)
    assert r.code == 3 and "fp16" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_checking_a_download_works_in_a_folder_holding_only_the_download(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """README: `repro verify --inputs-only --weights model.safetensors repro.lock   # check a download`."""
    import numpy as np
    from safetensors.numpy import save_file
    from test_lockfile import sample_lock

    from repro.lock import lockfile
    from repro.lock.tensordiff import read_tensors
    from repro.source.hashfile import hash_file

    assert "repro verify --inputs-only --weights model.safetensors repro.lock   # check a download" in _readme()
    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(tmp_path / "model.safetensors"))
    size, sha = hash_file(tmp_path / "model.safetensors")
    lock = sample_lock()
    with read_tensors(tmp_path / "model.safetensors") as weights:
        tensors = [t.record() for t in weights.tensors.values()]
    lock["outputs"]["weights"] = {"path": "model.safetensors", "size": size, "hashes": {"sha256": sha},
                                  "tensors": tensors}
    lockfile.write(tmp_path / "repro.lock", lock)
    args = ["verify", "--inputs-only", "--weights", "model.safetensors", "repro.lock"]
    import os

    os.chdir(tmp_path)  # the autouse fixture puts the working directory back
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "OK: the weights are the ones the lock names" in out and "the source was not checked" in out
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:-1] + b"\x01")
    assert main(args) == 1
    assert "weights" in capsys.readouterr().out


def test_the_readme_puts_repro_on_the_path_after_make_demo() -> None:
    """`make demo` installs repro into .venv only; the first bare `repro` command comes after activating it."""
    text = _readme()
    first = text.index("\nrepro ", text.index("## Your own project"))
    assert ". .venv/bin/activate" in text[text.index("## Your own project"):first]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo: venv\n\t\$\(BIN\)/repro train", makefile, re.M)  # the venv's console script


def test_recreate_finds_or_builds_repros_own_wheel_as_the_docs_say(tmp_path: Path) -> None:
    from repro import __version__
    from repro.verify.own_wheel import own_wheel_dir

    text = " ".join(_readme().split())
    assert "its wheel is found in the cache or built from this installation" in text
    assert "built from this installation" in " ".join((REPO / "docs" / "verify.md").read_text().split())
    folder = own_wheel_dir(__version__, tmp_path)
    assert folder is not None and list(folder.glob(f"repro-{__version__}-*.whl"))


def test_a_missing_stage_output_is_named_with_the_commands_that_make_it(tmp_path: Path) -> None:
    from repro.errors import DataError
    from repro.source.data import DataSpec
    from repro.source.inputs import data_files

    assert "`repro run NAME` (or `dvc repro`) makes it" in " ".join(_readme().split())
    resolved = {"data": {"builder": "csv", "data_files": ["data/train.csv"], "test_fraction": 0.0, "split_seed": 0},
                "stages": {"standardize": {"_target_": "prep.standardize.run", "inputs": ["raw/x.csv"],
                                           "outputs": ["data/train.csv"]}}}
    with pytest.raises(DataError) as err:
        data_files(resolved, tmp_path, DataSpec.from_config(resolved))
    message = str(err.value)
    assert "data/train.csv" in message and "stage standardize" in message
    assert "`repro run standardize`" in message and "repro verify --from-source" in message


def test_init_keeps_the_lock_out_of_gitignore_and_the_readme_says_what_to_publish(tmp_path: Path) -> None:
    import subprocess

    from repro.scaffold import files

    (tmp_path / ".gitignore").write_text(files("proj")[".gitignore"])
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)

    def ignored(rel: str) -> bool:
        return subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "-q", rel]).returncode == 0

    assert not ignored("out/repro.lock")
    assert ignored("out/model.safetensors") and ignored("out/run.json") and ignored(".repro/hashcache.sqlite")
    publishing = _readme().split("\n## Publishing\n", 1)[1].split("\n## ", 1)[0]
    assert "out/repro.lock" in publishing and ".gitignore" in publishing
    assert "## Publishing" in files("proj")["README.md"]
