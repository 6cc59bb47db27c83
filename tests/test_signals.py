"""A signal to the `repro` parent alone stops the whole process tree cleanly, and the rerun gets the same bytes.

Job schedulers, CI runners, supervisord and IDEs signal only the process they
started. Real processes throughout: `repro train` (or verify, or a stage) is
started, the signal goes to its pid alone, at a known point, and then: no process
of the tree is left, SIGINT and SIGTERM give one line and their exit code with no
temp folder and no out_dir lock left behind, and the same command run again
resumes to the bytes of a run that never stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, make_project, run_repro, sha256_file

from repro.filenames import OUT_DIR_LOCK
from repro.train import checkpoint
from repro.train.resume import PAUSE_AFTER_STEP_ENV, pause_marker

pytestmark = pytest.mark.slow

BIG = "big.bin"  # a sparse data source: hashing it lasts long enough to be interrupted in the middle
BIG_SIZE = 256 << 20
BASE = ["--quiet", "trainer.max_steps=20", "trainer.log_every=5", "trainer.checkpoint_every=10",
        "model.dropout=0.3", f"+data.sources=[{BIG}]"]
PAUSE = 15  # the mid-training point: between two checkpoints
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}
GONE_WITHIN = 5.0  # seconds, after the parent ended, for every process it started


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("signals") / "project")
    with open(project / BIG, "wb") as fh:
        fh.truncate(BIG_SIZE)
    return project


@pytest.fixture(scope="module")
def straight(project: Path) -> Path:
    """The reference: the same config, trained without a stop."""
    r = run_repro(["train", *BASE, "out_dir=straight", "trainer.checkpoint_every=0"], cwd=project)
    assert r.code == 0, r.stderr
    return project / "straight"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a repro process under test: its own TMPDIR, to see what it leaves there."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "TMPDIR": str(tmp), **extra}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _repro(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "repro", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _children(pid: int) -> set[int]:
    """Every descendant of `pid`, now (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie nobody reaped has exited: it holds no lock and runs nothing


def _wait_until(proc: subprocess.Popen[str], check, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            pytest.fail(f"exit {proc.returncode} before {what}: {proc.communicate()[1]}")
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.005)


def _reading(pid: int, name: str) -> bool:
    """Whether a process under `pid` has the file `name` open (hashing it)."""
    for child in _children(pid):
        try:
            if any(os.readlink(fd).endswith("/" + name) for fd in Path(f"/proc/{child}/fd").iterdir()):
                return True
        except OSError:
            continue
    return False


def _stop(proc: subprocess.Popen[str], sig: int) -> tuple[set[int], str]:
    """Send `sig` to the parent alone; wait for it; the processes it had started, and its stderr."""
    tree = _children(proc.pid)
    assert tree, "the parent had started no child"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT[sig], err
    deadline = time.monotonic() + GONE_WITHIN
    while any(_alive(p) for p in tree):
        assert time.monotonic() < deadline, f"still running {GONE_WITHIN} s after the parent: {tree}"
        time.sleep(0.02)
    return tree, err


def _one_clean_line(err: str, command: str, sig: int) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"repro {command}: interrupted by {signal.Signals(sig).name}"), err
    return lines[0]


def _left_in(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("repro-"))


@pytest.mark.parametrize("phase", ["hashing", "training"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signal_to_the_parent_alone_stops_the_tree_and_the_rerun_gets_the_same_bytes(
        project: Path, straight: Path, tmp_path: Path, sig: signal.Signals, phase: str) -> None:
    out = project / f"{phase}-{sig.name}"
    # Hashing again from the start (no stat cache) keeps the first run hashing long enough to stop it there.
    cmd = ["train", *BASE, f"out_dir={out.name}", *(["--rehash"] if phase == "hashing" else [])]
    proc = _repro(cmd, project, _env(tmp_path, **{PAUSE_AFTER_STEP_ENV: str(PAUSE)}))
    if phase == "hashing":
        _wait_until(proc, lambda: _reading(proc.pid, BIG), f"hashing {BIG}")
    else:
        _wait_until(proc, pause_marker(out / "checkpoints", PAUSE).exists, f"pausing after step {PAUSE}")
    _, err = _stop(proc, sig)

    kept = [p.name for p in checkpoint.step_dirs(out / "checkpoints")]
    if sig != signal.SIGKILL:
        line = _one_clean_line(err, "train", sig)
        assert _left_in(tmp_path) == [], "temp folders left behind"
        assert not (out / OUT_DIR_LOCK).exists(), "the out_dir lock left behind"
        if phase == "training":  # stopped after its step, with a checkpoint there
            assert f"after step {PAUSE}; checkpoint {out}/checkpoints/step-{PAUSE:08d} kept" in line
            assert kept == ["step-00000010", f"step-{PAUSE:08d}"]
        else:
            assert "after step" not in line and kept == [], "stopped while hashing, before any step"
    else:
        assert kept == (["step-00000010"] if phase == "training" else [])

    again = run_repro(cmd, cwd=project, env={"TMPDIR": str(tmp_path)})
    assert again.code == 0, again.stderr  # never 5: nothing holds out_dir any more
    if sig == signal.SIGKILL:  # its build child died holding out_dir's lock: the kernel released it
        assert f"{out / OUT_DIR_LOCK} was left by process" in again.stderr and "taking it over" in again.stderr
    if kept:
        assert f"resuming from {out}/checkpoints/{kept[-1]}" in again.stderr
    for name in ("model.safetensors", "repro.lock", "metrics.jsonl"):
        assert sha256_file(out / name) == sha256_file(straight / name), name


def test_ctrl_c_stops_verifys_rebuild_and_removes_its_work_folder(straight: Path, tmp_path: Path) -> None:
    proc = _repro(["verify", "--quiet", "--root", ".", str(straight / "repro.lock")], straight.parent,
                  _env(tmp_path, **{PAUSE_AFTER_STEP_ENV: "5"}))
    _wait_until(proc, lambda: any(tmp_path.glob("repro-verify-*/out/checkpoints/.paused-after-step-5")),
                "pausing its rebuild after step 5")
    _, err = _stop(proc, signal.SIGINT)
    line = _one_clean_line(err, "verify", signal.SIGINT)
    assert "during the rebuild after step 5" in line
    assert _left_in(tmp_path) == [], "verify's work folder left behind"


STAGE_CONFIG = """\
seed: 0
build: {profile: default, device: cpu, threads: 1, cpu_capability: avx2, precision: fp32, world_size: 1,
        deterministic: true, mkldnn: false, mkl_cbwr: COMPATIBLE, kernels: portable, unportable: refuse}
stages:
  slow:
    _target_: toy.slow
    params: {started: STARTED}
    outputs: [out/slow.txt]
"""
STAGE = """\
import time
from pathlib import Path


def slow(inputs, outputs, *, started):
    outputs[0].write_text("half")
    Path(started).write_text("")
    time.sleep(300)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stage_child_stops_with_its_parent(tmp_path: Path, sig: signal.Signals) -> None:
    root, started = tmp_path / "toy", tmp_path / "started"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "train.yaml").write_text(STAGE_CONFIG.replace("STARTED", str(started)))
    (root / "toy.py").write_text(STAGE)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = _repro(["run", "slow", "--quiet"], root, _env(tmp))
    _wait_until(proc, started.exists, "starting the stage")
    _, err = _stop(proc, sig)
    if sig != signal.SIGKILL:
        assert "during the stage slow" in _one_clean_line(err, "run", sig)
        assert list((root / ".repro" / "staging").iterdir()) == [], "the stage's staging folder left behind"
    assert not (root / "out").exists(), "no output of an interrupted stage"


def test_ctrl_c_stops_a_sweep_in_its_job_and_starts_no_other(tmp_path: Path) -> None:
    project = make_project(tmp_path / "sweep")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = _repro(["train", "-m", "--quiet", "trainer.max_steps=10", "trainer.checkpoint_every=5", "seed=0,1"],
                  project, _env(tmp, **{PAUSE_AFTER_STEP_ENV: "3"}))
    _wait_until(proc, lambda: any(project.glob("out/digits/multirun/0/checkpoints/.paused-after-step-3")),
                "pausing its first job after step 3")
    _, err = _stop(proc, signal.SIGINT)
    line = _one_clean_line(err, "train", signal.SIGINT)
    assert "during job " in line and "seed=0 after step 3" in line
    assert not (project / "out" / "digits" / "multirun" / "1").exists(), "a second job started"
    assert _left_in(tmp) == []
