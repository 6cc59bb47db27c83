"""Kill `repro train` at any moment, resume it, and get the bytes of a run that never stopped.

Every run here has dropout and a learning-rate schedule, so a resume that lost
the RNG or scheduler state would end in other weights.
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

import pause_checkpoint_plugin
import pytest
from conftest import REPO, make_project, run_repro, sha256_file
from pause_checkpoint_plugin import PAUSE_CHECKPOINT_ENV
from pause_checkpoint_plugin import marker as writing_marker

from repro.train import checkpoint
from repro.train.resume import PAUSE_AFTER_STEP_ENV, pause_marker

pytestmark = pytest.mark.slow

PLUGIN = Path(pause_checkpoint_plugin.__file__)  # copied into the project, which names it as its model

BASE = [
    "--quiet", "trainer.max_steps=40", "trainer.log_every=5", "model.dropout=0.3",
    "trainer.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:7,gamma:0.7}",
    f"model._target_={PLUGIN.stem}.MLP",  # repro's MLP, imported through the plugin
]
CKPT = ["trainer.checkpoint_every=10", "trainer.keep_checkpoints=2"]
# Where a test stops a build to SIGKILL it: after a step (repro's own REPRO_PAUSE_AFTER_STEP, which
# `repro check` uses too), or in the middle of a checkpoint write (a test plugin the project imports).
STEP, WRITE = PAUSE_AFTER_STEP_ENV, PAUSE_CHECKPOINT_ENV
MARKERS = {STEP: pause_marker, WRITE: writing_marker}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One digits project for the module, so the straight run is trained once."""
    project = make_project(tmp_path_factory.mktemp("resume") / "project")
    shutil.copy2(PLUGIN, project / PLUGIN.name)
    return project


@pytest.fixture(scope="module")
def straight(project: Path) -> Path:
    """The reference: trained straight through, without checkpoints."""
    return _train(project, "straight", "trainer.checkpoint_every=0")


def _train(project: Path, out: str, *extra: str) -> Path:
    r = run_repro(["train", *BASE, f"out_dir={out}", *extra], cwd=project)
    assert r.code == 0, r.stderr
    return project / out


def _start(project: Path, out: str, pause: tuple[str, int], *extra: str) -> subprocess.Popen[str]:
    """`repro train` in the background, stopping at the `pause` test hook."""
    env = {**os.environ, pause[0]: str(pause[1]), "HF_DATASETS_OFFLINE": "1"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "repro", "train", *BASE, *CKPT, f"out_dir={out}", *extra],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_paused(proc: subprocess.Popen[str], out: Path, pause: tuple[str, int]) -> Path:
    marker = MARKERS[pause[0]](out / "checkpoints", pause[1])
    deadline = time.monotonic() + 300
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"run ended (exit {proc.returncode}) before pausing at {pause}: {proc.communicate()[1]}")
        assert time.monotonic() < deadline, f"no pause at {pause}"
        time.sleep(0.05)
    return marker


def _kill_at(project: Path, out: str, pause: tuple[str, int]) -> None:
    proc = _start(project, out, pause)
    _wait_paused(proc, project / out, pause)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _checkpoints(out: Path) -> list[str]:
    return [p.name for p in checkpoint.step_dirs(out / "checkpoints")]


def _same_bytes(out: Path, ref: Path) -> None:
    assert sha256_file(out / "model.safetensors") == sha256_file(ref / "model.safetensors")
    assert (out / "repro.lock").read_bytes() == (ref / "repro.lock").read_bytes()
    assert (out / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes()


def _run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def test_checkpointing_changes_neither_weights_nor_lock(project: Path, straight: Path) -> None:
    out = _train(project, "with-checkpoints", *CKPT)
    _same_bytes(out, straight)
    assert _run_json(out)["checkpoints"] == {"every": 10, "keep": 2, "written": 4}
    assert not (out / "checkpoints").exists()  # a finished run removes them
    lock = json.loads((out / "repro.lock").read_text())
    assert "checkpoint_every" not in lock["inputs"]["config"]["resolved"]["trainer"]
    assert lock["inputs"]["config"]["resolved"]["model"]["dropout"] == 0.3


def test_killed_at_several_points_and_resumed_gives_the_same_bytes(project: Path, straight: Path) -> None:
    out = project / "killed"
    _kill_at(project, "killed", (STEP, 5))  # before the first checkpoint
    assert _checkpoints(out) == []
    _kill_at(project, "killed", (STEP, 10))  # starts fresh; killed right after checkpoint 10
    assert _checkpoints(out) == ["step-00000010"]
    _kill_at(project, "killed", (WRITE, 30))  # resumes at 10, writes 20, killed while writing 30
    assert _checkpoints(out) == ["step-00000010", "step-00000020"]
    partial = [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-step-00000030-")]
    assert len(partial) == 1 and (partial[0] / checkpoint.OPTIMIZER_NAME).is_file()
    assert not (partial[0] / checkpoint.MANIFEST_NAME).exists()

    r = run_repro(["train", *BASE, *CKPT, "out_dir=killed"], cwd=project)
    assert r.code == 0, r.stderr
    assert "resuming from" in r.stderr and "step-00000020" in r.stderr
    _same_bytes(out, straight)
    run = _run_json(out)
    assert run["resumed_from"]["step"] == 20
    assert [x["step"] for x in run["resumes"]] == [10, 20]
    assert not (out / "checkpoints").exists()


def test_truncated_newest_checkpoint_falls_back_to_the_previous(project: Path, straight: Path) -> None:
    out = project / "truncated"
    _kill_at(project, "truncated", (STEP, 40))  # all steps done, checkpoints 30 and 40 written
    assert _checkpoints(out) == ["step-00000030", "step-00000040"]
    newest = out / "checkpoints" / "step-00000040" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    # checkpoint_every is not hashed: a resume may save more often than the run it continues.
    r = run_repro(["train", *BASE, "trainer.checkpoint_every=7", "out_dir=truncated"], cwd=project)
    assert r.code == 0, r.stderr
    warning = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert len(warning) == 1 and "step-00000040/model.safetensors" in warning[0], r.stderr
    assert _run_json(out)["resumed_from"]["step"] == 30
    _same_bytes(out, straight)


def test_changed_config_is_refused_naming_the_key(project: Path, straight: Path) -> None:
    out = project / "changed"
    _kill_at(project, "changed", (STEP, 10))
    kept = project / "changed-checkpoints"  # for --no-resume below, which needs checkpoints to delete
    shutil.copytree(out / "checkpoints", kept)
    r = run_repro(["train", *BASE, *CKPT, "out_dir=changed", "trainer.batch_size=32"], cwd=project)
    assert r.code == 2, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "config key trainer.batch_size is 32, the checkpoint has 64" in last and "--restart" in last
    assert _checkpoints(out) == ["step-00000010"]  # refusing deletes nothing

    r = run_repro(["train", *BASE, *CKPT, "out_dir=changed", "trainer.batch_size=32", "--restart"], cwd=project)
    assert r.code == 0, r.stderr
    assert "--restart" in r.stderr and _run_json(out)["resumed_from"] is None

    # Checkpoints again, as a second run killed at step 10 would leave them: the first kill's, put back.
    shutil.copytree(kept, out / "checkpoints")
    assert _checkpoints(out) == ["step-00000010"]
    r = run_repro(["train", *BASE, *CKPT, "out_dir=changed", "--no-resume"], cwd=project)
    assert r.code == 0, r.stderr
    assert "--no-resume: deleting the checkpoints" in r.stderr
    assert _run_json(out)["resumed_from"] is None
    _same_bytes(out, straight)


def test_pickled_checkpoint_is_refused(project: Path) -> None:
    pickled = project / "old-run.pt"
    pickled.write_bytes(b"\x80\x04not read")
    r = run_repro(["train", *BASE, "out_dir=from-pt", f"--resume-from={pickled}"], cwd=project)
    assert r.code == 2, r.stderr
    assert "old-run.pt: pickled checkpoints are never loaded" in r.stderr and "Traceback" not in r.stderr
    assert not (project / "from-pt").exists()


def test_second_run_on_the_same_out_dir_is_refused_and_the_first_is_unaffected(
        project: Path, straight: Path) -> None:
    pause = (STEP, 10)
    first = _start(project, "busy", pause)
    marker = _wait_paused(first, project / "busy", pause)
    second = run_repro(["train", *BASE, *CKPT, "out_dir=busy"], cwd=project)
    assert second.code == 5, second.stderr
    assert "another `repro train` is running there" in second.stderr and "Traceback" not in second.stderr
    marker.unlink()  # let the first one go on
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    _same_bytes(project / "busy", straight)
