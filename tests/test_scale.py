"""Several processes, and the portable CPU profile, without losing the bits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO, TINY, Result, make_project, run_repro, sha256_file

from repro.train.resume import PAUSE_AFTER_STEP_ENV, pause_marker

pytestmark = [pytest.mark.slow, pytest.mark.integration]
BIN = Path(sys.executable).parent
# The reference 2-process config. Dropout, and more steps than a checkpoint interval, are for the resume
# test, which compares its killed-and-resumed run with the `two` build: a resume that lost an RNG state
# would end in other weights. They make every launcher's run draw from its RNG as well.
TWO = ["--quiet", "build.world_size=2", "trainer.max_steps=30", "trainer.log_every=5", "model.dropout=0.2"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("scale") / "project")


@pytest.fixture(scope="module")
def two(project: Path) -> Path:
    """The reference 2-process run, spawned by `repro train build.world_size=2` itself."""
    r = run_repro(["train", *TWO, "out_dir=two"], cwd=project)
    assert r.code == 0, r.stderr
    return project / "two"


@pytest.fixture(scope="module")
def rebuilt(project: Path, two: Path) -> Path:
    """`repro verify` of the 2-process lock, its rebuild kept: a second build by repro's own ranks."""
    r = run_repro(["verify", "--quiet", "--json", str(two / "repro.lock"), "--root", str(project),
                   "--work-dir", str(project / "verify-work")], cwd=project)
    assert r.code == 0, r.stdout + r.stderr
    return project / "verify-work" / "out"


@pytest.fixture(scope="module")
def at_one(project: Path, two: Path) -> tuple[Result, Path]:
    """The 2-process lock rebuilt by one process (`verify --world-size 1`): its report, and the kept 1-process build."""
    r = run_repro(["verify", "--quiet", str(two / "repro.lock"), "--root", str(project), "--world-size", "1",
                   "--no-record", "--work-dir", str(project / "verify-one")], cwd=project)
    return r, project / "verify-one" / "out"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_OFFLINE": "1"}


def _same(a: Path, b: Path) -> None:
    assert sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors")
    assert (a / "repro.lock").read_bytes() == (b / "repro.lock").read_bytes()


def test_two_process_runs_agree_under_every_launcher(project: Path, two: Path, rebuilt: Path) -> None:
    lock = json.loads((two / "repro.lock").read_text())
    assert lock["build"]["world_size"] == 2
    assert lock["build"]["flags"]["distributed"] == {
        "backend": "gloo", "batch_split": "contiguous", "per_rank_batch": 32, "grad_accumulation": 1,
        "loss_reduction": "mean over ranks in rank order"}
    _same(two, rebuilt)  # repro's own ranks, a second time (verify's rebuild)
    args = ["-m", "repro", "train", *TWO]
    for name, cmd in {
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args],
        "accelerate": [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes=2", *args],
    }.items():
        proc = subprocess.run([*cmd, f"out_dir={name}"], cwd=project, env=_env(), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.count("weights      sha256") == 1  # rank 0 alone reports
        _same(two, project / name)


def test_world_size_is_recorded_and_diffed(project: Path, two: Path, at_one: tuple[Result, Path]) -> None:
    one = at_one[1]  # the same source, built by one process
    d = run_repro(["diff", str(one / "repro.lock"), str(two / "repro.lock")], cwd=project)
    assert d.code == 1
    assert "world_size  1 -> 2" in d.stdout and "per_rank_batch  64 -> 32" in d.stdout


def test_verify_rebuilds_with_the_recorded_world_size(rebuilt: Path, at_one: tuple[Result, Path]) -> None:
    lock = json.loads((rebuilt / "repro.lock").read_text())  # the fixture checked verify's exit 0
    assert lock["build"]["world_size"] == 2
    assert lock["build"]["flags"]["distributed"]["backend"] == "gloo"
    other, _ = at_one
    assert other.code == 1 and "not expected to be bit-identical" in other.stdout


def test_a_dead_rank_ends_the_run_cleanly(project: Path) -> None:
    out = project / "dies"
    proc = subprocess.Popen([sys.executable, "-m", "repro", "train", "--quiet", "build.world_size=2",
                             "trainer.max_steps=1000000", "out_dir=dies"], cwd=project, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        victim = _rank_process(proc, rank=1)
        time.sleep(2)  # let the ranks reach their training loop
        victim.send_signal(signal.SIGKILL)
        started = time.monotonic()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
    assert proc.returncode == 4, err
    assert time.monotonic() - started < 60
    assert "rank 1 of 2 died (SIGKILL)" in err and "Traceback" not in err
    assert not (out / "model.safetensors").exists() and not (out / "repro.lock").exists()


def _rank_process(proc: subprocess.Popen[str], rank: int) -> psutil.Process:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "repro.builder" in child.cmdline() and child.environ().get("RANK") == str(rank):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.1)
    raise AssertionError(f"rank {rank} never started")


def test_two_process_resume_gives_the_same_bytes(project: Path, two: Path) -> None:
    """Killed after step 20 and resumed, a 2-process run ends in the bytes of `two`, the same config
    trained straight through (checkpoint_every is not hashed, so the locks match byte for byte)."""
    ckpt = ["trainer.checkpoint_every=10", "trainer.keep_checkpoints=2", "out_dir=mp-resumed"]
    env = {**_env(), PAUSE_AFTER_STEP_ENV: "20"}
    proc = subprocess.Popen([sys.executable, "-m", "repro", "train", *TWO, *ckpt], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    marker = pause_marker(project / "mp-resumed" / "checkpoints", 20)
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _kill_tree(proc)  # a power cut: every rank and the launcher at once
    resumed = run_repro(["train", *TWO, *ckpt], cwd=project)
    assert resumed.code == 0, resumed.stderr
    assert "resumed      at step 20" in resumed.stdout
    _same(two, project / "mp-resumed")


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in procs:
        p.kill()
    psutil.wait_procs(procs, timeout=30)
    proc.communicate()


def test_bad_world_size_combinations_name_both_keys(project: Path) -> None:
    r = run_repro(["train", "--quiet", *TINY, "build.world_size=3"], cwd=project)
    assert r.code == 2 and "trainer.batch_size=64" in r.stderr and "build.world_size=3" in r.stderr
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "repro", "train", "--quiet", *TINY, "out_dir=mismatch"], cwd=project, env=_env(),
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "build.world_size is 1 but the launcher started 2" in proc.stderr
    assert not (project / "mismatch").exists()


def test_the_native_profile_trains_with_torchs_own_kernels_and_ignores_affinity(project: Path) -> None:
    args = ["--quiet", *TINY, "build=native"]
    a = run_repro(["train", *args, "out_dir=native-a"], cwd=project)
    b = run_repro(["train", *args, "out_dir=native-b"], cwd=project, prefix=["taskset", "-c", "0"])
    assert a.code == 0 and b.code == 0, a.stderr + b.stderr
    _same(project / "native-a", project / "native-b")
    lock = json.loads((project / "native-a" / "repro.lock").read_text())
    assert lock["build"]["kernels"] == "vendor" and lock["build"]["mkldnn"] and lock["build"]["flags"]["mkldnn"]

