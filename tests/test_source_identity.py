"""The source identity a checkpoint records, the check before the first resumed step, and the out_dir lock's holder.

Unit tests on the functions (no build): the end-to-end refusals are in test_resume_source.py.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from test_checkpoint import IDENTITY, _trained_parts, _write_one

from repro.errors import CheckpointError
from repro.filenames import MANIFEST_NAME, OUT_DIR_LOCK
from repro.lock import identity
from repro.source.config import CheckpointSpec
from repro.train import checkpoint, resume


def _changed(path: str, digest: str) -> dict[str, Any]:
    """IDENTITY with one compiler module of repro at `path` hashed to `digest`."""
    other = copy.deepcopy(IDENTITY)
    other["toolchain"]["repro"]["files"] = [{"path": path, "size": 1, "hashes": {"sha256": digest}}]
    return other


def test_changes_name_code_compiler_modules_packages_and_pins() -> None:
    now = _changed("repro/train/loop.py", "b" * 64)
    now["code"]["files"] = [{"path": "p/blocks.py", "size": 3, "hashes": {"sha256": "c" * 64}}]
    now["toolchain"]["distributions"] = {"numpy": "2.1.0"}
    now["pins"] = {"threads": 2}
    found = [(d.kind, d.name, d.change) for d in identity.changes(IDENTITY, now)]
    assert found == [("code", "p/blocks.py", "added"), ("pin", "threads", "added"),
                     ("distribution", "numpy", "added"), ("compiler", "repro/train/loop.py", "added")]
    assert identity.changes(now, copy.deepcopy(now)) == []
    assert identity.summary(now) != identity.summary(IDENTITY)
    assert identity.summary(now) == identity.summary(json.loads(json.dumps(now)))  # JSON round trip: same digests


def _session(tmp_path: Path, mode: resume.Mode, now: dict[str, Any]) -> tuple[resume.Session, list[str]]:
    """A session resuming from a checkpoint written with IDENTITY, whose run now has identity `now`."""
    root = tmp_path / "checkpoints"
    _write_one(root, _trained_parts(), 4)
    said: list[str] = []
    session = resume.Session(root, CheckpointSpec(every=2, keep=2), {}, resume=checkpoint.read(root / "step-00000004"),
                             identify=lambda: now, mode=mode, notify=said.append)
    return session, said


def test_begin_refuses_a_checkpoint_of_another_compiler_naming_the_module(tmp_path: Path) -> None:
    session, said = _session(tmp_path, "auto", _changed("repro/train/loop.py", "b" * 64))
    with pytest.raises(CheckpointError) as refused:
        session.begin()
    assert "step-00000004 was made from another source: repro compiler module repro/train/loop.py is new" in \
        str(refused.value) and "--restart" in str(refused.value)
    assert said == [] and checkpoint.step_dirs(session.root), "refusing deletes nothing and says no 'resuming'"


def test_begin_with_restart_starts_over_and_with_the_same_source_resumes(tmp_path: Path) -> None:
    session, said = _session(tmp_path, "restart", _changed("repro/train/loop.py", "b" * 64))
    assert session.begin() is None and session.resumes == []
    assert said[0].startswith("--restart: step-00000004 was made from another source (repro compiler module")
    assert not checkpoint.step_dirs(session.root)

    same, said = _session(tmp_path / "again", "auto", copy.deepcopy(IDENTITY))
    assert same.begin() is same.resume and same.identity == IDENTITY
    assert said == [f"resuming from {same.root / 'step-00000004'} (step 4)"]


@pytest.mark.parametrize("mode", ["auto", "restart"])
def test_a_version_1_checkpoint_is_refused_or_with_restart_replaced(tmp_path: Path, mode: resume.Mode) -> None:
    out = tmp_path / "out"
    folder = _write_one(out / "checkpoints", _trained_parts(), 4)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    (folder / MANIFEST_NAME).write_text(json.dumps({**manifest, "version": 1}))
    said: list[str] = []
    options = resume.ResumeOptions(mode=mode)
    if mode == "auto":
        with pytest.raises(CheckpointError, match="checkpoint version 1, .* pass --restart to train from step 0"):
            resume.start(out, CheckpointSpec(every=2, keep=2), {}, options, said.append)
        assert folder.is_dir()
    else:
        session = resume.start(out, CheckpointSpec(every=2, keep=2), {}, options, said.append)
        assert session.resume is None and not folder.exists()
        assert said[0].startswith(f"--restart: {folder}/{MANIFEST_NAME}: checkpoint version 1")


def test_a_lock_file_left_by_a_dead_holder_is_taken_over_with_a_message(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (out / OUT_DIR_LOCK).write_text(f"{dead}\n")  # as a SIGKILLed build leaves it: the kernel dropped its flock
    said: list[str] = []
    with resume.hold_out_dir(out, said.append):
        assert (out / OUT_DIR_LOCK).read_text() == f"{os.getpid()}\n"
        code = ("import sys; from pathlib import Path; from repro.train.resume import hold_out_dir\n"
                "from repro.errors import Busy\n"
                "try:\n    hold_out_dir(Path(sys.argv[1])).__enter__()\nexcept Busy as e:\n    print(e)")
        other = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                               env={"PYTHONPATH": str(REPO)}, check=True)
        assert f"(process {os.getpid()} holds {OUT_DIR_LOCK})" in other.stdout
    assert said == [f"{out / OUT_DIR_LOCK} was left by process {dead}, which is gone: taking it over"]
    assert not (out / OUT_DIR_LOCK).exists()
