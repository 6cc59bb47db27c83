"""One notion of "the source", as a user's project meets it (issue 30's acceptance).

The project is `repro init` plus one stage with its own helper, under git and DVC:

    proj/      the model package (net.py imports blocks.py)
    prep/      the stage `standardize` (standardize.py imports stats.py)
    raw/       its input; data/train.csv, its output, is what training reads
    configs/   train.yaml (declares the stage), model/net.yaml, data/local.yaml

Every edit to one of those files is named by `repro verify --inputs-only` (exit 1, the file and the
remedy) and makes `dvc status` report the stage it touches; `repro check` copies what a clone holds;
a typo in a config file is exit 2 naming the file, the key and the nearest valid key.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, run_repro

pytestmark = pytest.mark.slow

STATS = "def scale(v: int) -> int:\n    return v\n"
STANDARDIZE = '''\
from pathlib import Path

from prep.stats import scale


def standardize(inputs: list[Path], outputs: list[Path]) -> None:
    head, *rows = inputs[0].read_text().splitlines()
    out = [head] + [",".join([*(str(scale(int(v))) for v in r.split(",")[:-1]), r.split(",")[-1]]) for r in rows]
    outputs[0].write_text("\\n".join(out) + "\\n")
'''
STAGE = """
stages:
  standardize:
    _target_: prep.standardize.standardize
    inputs: [raw/source.csv]
    outputs: [data/train.csv]
"""
ENV = {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def _ok(args: list[str], cwd: Path) -> str:
    r = run_repro(args, cwd=cwd, env=ENV)
    assert r.code == 0, (args, r.stdout, r.stderr)
    return r.stdout


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """DVC, with this environment's `repro` first on PATH (its stage commands call `repro run`, `repro train`)."""
    bin_dir = str(Path(sys.executable).parent)
    dvc = shutil.which("dvc", path=bin_dir) or "dvc"
    env = {**os.environ, **ENV, "PYTHONPATH": str(REPO), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run([dvc, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parent = tmp_path_factory.mktemp("source")
    _ok(["init", "proj"], parent)
    root = parent / "proj"
    (root / "raw").mkdir()
    (root / "data" / "train.csv").rename(root / "raw" / "source.csv")
    (root / "prep").mkdir()
    (root / "prep" / "__init__.py").write_text("")
    (root / "prep" / "stats.py").write_text(STATS)
    (root / "prep" / "standardize.py").write_text(STANDARDIZE)
    (root / "configs" / "train.yaml").write_text((root / "configs" / "train.yaml").read_text() + STAGE)
    _ok(["run", "standardize", "--quiet"], root)
    assert _dvc(["init", "-q"], root).returncode == 0
    _ok(["dvc-yaml", "--write"], root)
    _ok(["dvc-yaml", "--check"], root)
    r = _dvc(["repro", "-q"], root)
    assert r.returncode == 0, r.stdout + r.stderr
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env={**os.environ, **ENV})
    subprocess.run(["git", "commit", "-qm", "project"], cwd=root, check=True, env={**os.environ, **ENV})
    assert "up to date" in _dvc(["status"], root).stdout
    return root


@pytest.fixture
def edited(project: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """The project with `request.param` edited (a comment appended), put back afterwards."""
    path = project / request.param
    before = path.read_bytes()
    path.write_bytes(before + b"\n# an edit\n")
    yield project
    path.write_bytes(before)


# file edited -> (dvc stages it changes, the command verify's hint names)
EDITS = {
    "prep/stats.py": ({"standardize"}, "repro run standardize"),
    "prep/standardize.py": ({"standardize"}, "repro run standardize"),
    "proj/blocks.py": ({"train"}, "repro train"),
    "proj/net.py": ({"train"}, "repro train"),
    "configs/model/net.yaml": ({"train"}, "repro train"),
    "configs/data/local.yaml": ({"train"}, "repro train"),
    "configs/train.yaml": ({"standardize", "train"}, "repro train"),
}


@pytest.mark.parametrize(("edited", "stages", "remedy"), [(f, *v) for f, v in EDITS.items()],
                         ids=list(EDITS), indirect=["edited"])
def test_every_edit_is_named_by_verify_and_seen_by_dvc(edited: Path, stages: set[str], remedy: str,
                                                       request: pytest.FixtureRequest) -> None:
    rel = request.node.callspec.params["edited"]
    r = run_repro(["verify", "--inputs-only", "--json", "out/repro.lock"], cwd=edited, env=ENV)
    assert r.code == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)["result"]
    named = [d["name"] for d in report["differences"]]
    assert any(n == rel or n.endswith(f": {rel}") for n in named), named
    assert any(remedy in h for h in report["hints"]), report["hints"]
    status = _dvc(["status", "--json"], edited)
    assert status.returncode == 0, status.stderr
    assert {name.rpartition(":")[2] for name in json.loads(status.stdout)} == stages


def test_the_source_untouched_verifies_and_dvc_is_up_to_date(project: Path) -> None:
    r = run_repro(["verify", "--inputs-only", "out/repro.lock"], cwd=project, env=ENV)
    assert r.code == 0, r.stdout + r.stderr
    lock = json.loads((project / "out" / "repro.lock").read_text())
    assert {"configs/train.yaml", "configs/model/net.yaml", "configs/data/local.yaml", "proj/blocks.py"} <= \
        {f["path"] for f in lock["inputs"]["code"]["files"]}
    [record] = lock["inputs"]["stages"]
    assert {f["path"] for f in record["code"]["files"]} == {"prep/__init__.py", "prep/standardize.py",
                                                          "prep/stats.py"}


def test_check_copies_what_a_clone_holds_and_says_what_it_does(project: Path, tmp_path: Path) -> None:
    (project / ".venv" / "lib").mkdir(parents=True)
    (project / ".venv" / "lib" / "big.py").write_text("x = 1\n")  # untracked: a clone has none of it
    (project / "notes.txt").write_text("mine\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    try:
        r = run_repro(["check", "--steps", "5", "--axes", "again,path,resume", "--work-dir", str(tmp_path / "w")],
                      cwd=project, env={**ENV, "TMPDIR": str(tmp)})
    finally:
        shutil.rmtree(project / ".venv")
        (project / "notes.txt").unlink()
    assert r.code == 0, r.stdout + r.stderr
    progress = [line for line in r.stderr.splitlines() if line.startswith("repro check: ")]
    assert len(progress) == 5 and "path/another path (2/3): identical" in r.stderr, r.stderr
    [copy] = (tmp_path / "w").glob("*-path/another place/proj")
    made_there = ("out", ".repro", "__pycache__")  # what the build itself writes in the copy
    copied = {p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()
              and not set(p.relative_to(copy).parts) & set(made_there)}
    tracked = set(subprocess.run(["git", "ls-files"], cwd=project, capture_output=True, text=True,
                                 check=True).stdout.split())
    dvc_outs = {"data/train.csv", "data/standardize.stage.json", "out/model.safetensors", "out/metrics.jsonl"}
    assert copied <= tracked | dvc_outs, copied - tracked - dvc_outs
    assert {"data/train.csv", "data/standardize.stage.json", "prep/stats.py", "raw/source.csv"} <= copied
    assert not list(tmp.iterdir())  # no /tmp/repro-launch-* (nor anything else) left behind


def test_check_refuses_the_path_axis_outside_git(project: Path, tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    shutil.copytree(project, loose, ignore=shutil.ignore_patterns(".git", ".dvc"))
    r = run_repro(["check", "--axes", "path", "--steps", "2"], cwd=loose, env=ENV)
    assert r.code == 2 and "not in a git repository" in r.stderr and "Traceback" not in r.stderr, r.stderr


TYPOS = [
    ("configs/train.yaml", "trainer:\n", "trainer:\n  max_step: 7\n", "trainer.max_step", "trainer.max_steps"),
    ("configs/train.yaml", "trainer:\n", "build:\n  thread: 1\ntrainer:\n", "build.thread", "build.threads"),
    ("configs/data/local.yaml", "builder: csv\n", "builder: csv\ntest_fractoin: 0.1\n", "data.test_fractoin",
     "data.test_fraction"),
    ("configs/train.yaml", "trainer:\n", "task:\n  label_colum: x\ntrainer:\n", "task.label_colum",
     "task.label_column"),
    ("configs/train.yaml", "seed: 0\n", "sed: 0\nseed: 0\n", "sed", "seed"),
]


@pytest.mark.parametrize(("rel", "old", "new", "key", "nearest"), TYPOS, ids=[t[3] for t in TYPOS])
def test_a_typo_in_a_config_file_is_exit_2_naming_file_key_and_nearest(project: Path, rel: str, old: str,
                                                                       new: str, key: str, nearest: str) -> None:
    path = project / rel
    before = path.read_text()
    path.write_text(before.replace(old, new, 1))
    try:
        r = run_repro(["train", "--quiet", "out_dir=typo"], cwd=project, env=ENV)
    finally:
        path.write_text(before)
    assert r.code == 2, r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith(f"repro train: error: {rel}: unknown key {key}") and f"did you mean {nearest}?" in line
    assert not (project / "typo").exists()


def test_value_errors_are_exit_2_naming_key_value_and_expectation(project: Path) -> None:
    for override, needle in (("trainer.lr=-1", "config key trainer.lr: expected a positive learning rate, got -1"),
                             ("model.hidden=abc", "config key model.hidden: expected int"),
                             ("model=nope", "config group model: no option 'nope'; expected one of ")):
        r = run_repro(["train", "--quiet", override, "out_dir=bad"], cwd=project, env=ENV)
        assert r.code == 2 and needle in r.stderr and len(r.stderr.splitlines()) == 1, (override, r.stderr)


def test_a_sweep_with_json_prints_exactly_one_object(project: Path) -> None:
    r = run_repro(["train", "-m", "seed=0,1", "trainer.max_steps=3", "out_dir=sweep", "--json"], cwd=project,
                  env=ENV)
    assert r.code == 0, r.stderr
    envelope = json.loads(r.stdout)  # the whole of stdout: one object
    assert [j["status"] for j in envelope["result"]["jobs"]] == ["ok", "ok"]
    assert "Launching 2 jobs" in r.stderr  # Hydra's launcher log, on stderr
    human = run_repro(["train", "-m", "seed=0,1", "trainer.max_steps=3", "out_dir=sweep"], cwd=project, env=ENV)
    assert "final loss" in human.stdout and "held-out accuracy" in human.stdout, human.stdout


def test_help_lists_every_group_with_the_build_profiles_from_the_config_folder(project: Path) -> None:
    profiles = sorted(p.stem for p in (REPO / "repro" / "configs" / "build").glob("*.yaml"))
    for args in (["train", "--help"], ["train", "--info"]):
        out = _ok(args, project)
        assert f"build: {', '.join(profiles)}\n" in out and "\ntrainer: " in out and "\nmodel: " in out, out
        assert "\\t" not in out


def test_the_card_has_no_none_and_names_the_users_files(project: Path) -> None:
    _ok(["card", "out"], project)
    card = (project / "out" / "README.md").read_text()
    assert "None" not in card and card.split("\n# ", 1)[1].startswith("proj: TinyNet\n")
    audit = json.loads(_ok(["audit", "--json", "out"], project))["result"]
    evidence = " ".join(c["evidence"] for c in audit["components"])
    assert "repro/" not in evidence and "proj/net.py" in evidence and "prep/stats.py" in evidence
    assert "None" not in _ok(["audit", "out"], project)
