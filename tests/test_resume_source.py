"""Resume only what the same source made: an edit between the stop and the rerun is refused, naming it.

A run is stopped at a checkpoint (Ctrl-C, as a user would), then one thing is
edited: the project's helper module, a data file, a config file, a compiler
module of repro itself. The same command must then exit 2 naming what changed and
offering --restart, and --restart must give the weights of a fresh run. A
release resumed under other code anyway (a test plugin stands in for a repro
that did not check) records it in its lock, and verify names that, not the CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, Result, make_project, run_repro, sha256_file

from repro.filenames import CHECKPOINTS_DIR, MANIFEST_NAME
from repro.train import checkpoint
from repro.train.resume import PAUSE_AFTER_STEP_ENV, pause_marker

pytestmark = pytest.mark.slow

BASE = ["--quiet", "trainer.max_steps=20", "trainer.log_every=5", "trainer.checkpoint_every=10",
        "model._target_=p.model.Net", "out_dir=out"]
STOP = 10
# The project's own model package: a model module and the helper it imports.
BLOCKS = "def residual(x, branch):\n    return x + branch\n"
EDITED = "def residual(x, branch):\n    return x + 0.5 * branch  # scaled\n"
MODEL = '''\
import os

import torch
from torch import nn

from p.blocks import residual

if os.environ.get("REPRO_TEST_ACCEPT_OTHER_SOURCE"):  # a test's stand-in for a repro that did not check
    from repro.train import resume

    resume.other_source = lambda session, changed: None


class Net(nn.Module):
    def __init__(self, in_features, hidden, out_features, depth=1, dropout=0.0):
        super().__init__()
        self.inp, self.mid = nn.Linear(in_features, hidden), nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, out_features)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(residual(h, torch.relu(self.mid(h))))
'''
DATA = "repro/examples/digits/digits.csv"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", **extra}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose `repro train` was stopped by Ctrl-C after step 10, its checkpoint kept."""
    project = make_project(tmp_path_factory.mktemp("resume-source") / "project")
    (project / "p").mkdir()
    (project / "p" / "__init__.py").write_text("")
    (project / "p" / "blocks.py").write_text(BLOCKS)
    (project / "p" / "model.py").write_text(MODEL)
    proc = subprocess.Popen([sys.executable, "-m", "repro", "train", *BASE], cwd=project,
                            env=_env(**{PAUSE_AFTER_STEP_ENV: str(STOP)}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    marker, deadline = pause_marker(project / "out" / CHECKPOINTS_DIR, STOP), time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "never paused"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert [p.name for p in checkpoint.step_dirs(project / "out" / CHECKPOINTS_DIR)] == [f"step-{STOP:08d}"]
    return project


@pytest.fixture
def project(stopped: Path, tmp_path: Path) -> Path:
    """A copy of the stopped project, for one edit."""
    return Path(shutil.copytree(stopped, tmp_path / "project", symlinks=True))


def _refused(r: Result, *names: str) -> str:
    """The one-line refusal (exit 2) naming each of `names` and offering --restart."""
    assert r.code == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    line = r.stderr.strip()
    assert line.startswith("repro train: error: ") and "--restart" in line, line
    for name in names:
        assert name in line, line
    return line


def test_an_edited_helper_module_is_refused_and_restart_gives_the_fresh_weights(project: Path) -> None:
    (project / "p" / "blocks.py").write_text(EDITED)
    line = _refused(run_repro(["train", *BASE], cwd=project), "code file p/blocks.py")
    assert "was made from another source" in line
    assert [p.name for p in checkpoint.step_dirs(project / "out" / CHECKPOINTS_DIR)] == [f"step-{STOP:08d}"]

    restarted = run_repro(["train", *BASE, "--restart"], cwd=project)
    assert restarted.code == 0, restarted.stderr
    assert "--restart: step-00000010 was made from another source (code file p/blocks.py" in restarted.stderr
    fresh = run_repro(["train", *BASE[:-1], "out_dir=fresh", "--no-resume"], cwd=project)
    assert fresh.code == 0, fresh.stderr
    assert sha256_file(project / "out" / "model.safetensors") == sha256_file(project / "fresh" / "model.safetensors")
    assert (project / "out" / "repro.lock").read_bytes() == (project / "fresh" / "repro.lock").read_bytes()


def test_an_edited_data_file_is_refused_naming_it(project: Path) -> None:
    data = project / DATA
    lines = data.read_text().splitlines(keepends=True)
    first = lines[1].split(",")
    lines[1] = ",".join([str(float(first[0]) + 1), *first[1:]])
    data.write_text("".join(lines))
    _refused(run_repro(["train", *BASE], cwd=project), f"data file {DATA}")


def test_an_edited_config_file_is_refused_naming_the_key(project: Path) -> None:
    trainer = project / "configs" / "trainer" / "default.yaml"
    trainer.write_text(trainer.read_text().replace("lr: 0.01", "lr: 0.02"))
    _refused(run_repro(["train", *BASE], cwd=project), "config key trainer.lr is 0.02, the checkpoint has 0.01")


def test_an_edited_compiler_module_of_repro_is_refused_naming_it(project: Path, tmp_path: Path) -> None:
    """The build runs a copy of repro; one of its compiler modules is edited between the stop and the rerun.

    The copy's files are byte-identical to the ones that wrote the checkpoint, so only the edit differs.
    """
    toolchain = tmp_path / "toolchain"
    shutil.copytree(REPO / "repro", toolchain / "repro", ignore=shutil.ignore_patterns("__pycache__"))
    sampling = toolchain / "repro" / "train" / "sampling.py"
    sampling.write_text(sampling.read_text() + "\n# an edit that a resume must not mix with the old file\n")
    env = {**_env(), "PYTHONPATH": str(toolchain)}
    proc = subprocess.run([sys.executable, "-m", "repro", "train", *BASE], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
    _refused(Result(proc.returncode, proc.stdout, proc.stderr), "repro compiler module repro/train/sampling.py")


def test_a_checkpoint_without_a_source_identity_is_refused(project: Path) -> None:
    """One written before checkpoints recorded their source (format 1): refused, not skipped and replaced.

    (--restart then starts over, as for any refused checkpoint: see the helper module's test.)
    """
    folder = project / "out" / CHECKPOINTS_DIR / f"step-{STOP:08d}"
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    (folder / MANIFEST_NAME).write_text(json.dumps({**manifest, "version": 1}))
    line = _refused(run_repro(["train", *BASE], cwd=project), f"{folder}/{MANIFEST_NAME}: checkpoint version 1")
    assert "did not record the source identity" in line
    assert folder.is_dir(), "refusing deletes nothing"


def test_verify_names_a_resume_under_other_code_not_the_cpu(project: Path) -> None:
    """A release resumed under edited code (the refusal bypassed): its lock says so, and verify repeats it."""
    (project / "p" / "blocks.py").write_text(EDITED)
    r = run_repro(["train", *BASE], cwd=project, env={"REPRO_TEST_ACCEPT_OTHER_SOURCE": "1"})
    assert r.code == 0, r.stderr
    lock = json.loads((project / "out" / "repro.lock").read_text())
    assert lock["version"] == 3
    [boundary] = lock["build"]["resumes"]
    assert boundary["step"] == STOP
    assert boundary["differs"] == [{"kind": "code", "name": "p/blocks.py", "change": "changed"}]

    v = run_repro(["verify", "--quiet", "--root", ".", "out/repro.lock", "--json"], cwd=project)
    assert v.code == 1, v.stderr
    report = json.loads(v.stdout)["result"]
    assert [n["name"] for n in report["notes"] if n["kind"] == "resume"] == [f"step {STOP}"]
    [hint] = report["hints"]
    assert f"resumed at step {STOP} from a checkpoint made from another source (code p/blocks.py)" in hint
    assert "this CPU" not in hint and "likely cause is" not in hint
