"""Every failure of `repro train` is named in one line, with its documented exit code,
and leaves no partial file: wrong value types, pins this machine cannot honour, and
outputs that cannot be written (full disk, read-only filesystem)."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, TINY, make_project, run_repro, sha256_file

from repro.canonical import StagedFiles, atomic_write_bytes
from repro.errors import EXIT_CODES, ConfigError, OutputError, output_error
from repro.source.config import check_value_types


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize(("override", "needle"), [
    ("trainer.lr=abc", "config key trainer.lr: expected float, got 'abc' (str)"),
    ("seed=1.5", "config key seed: expected int, got 1.5 (float)"),
    ("trainer.shuffle=3", "config key trainer.shuffle: expected bool, got 3 (int)"),
    ("build.world_size=two", "config key build.world_size: expected int, got 'two' (str)"),
])
def test_a_wrong_type_exits_2_naming_key_type_and_value(project: Path, override: str, needle: str) -> None:
    res = run_repro(["train", "--quiet", override, "out_dir=o"], cwd=project)
    assert res.code == 2
    assert needle in _one_line(res.stderr)
    assert not (project / "o").exists()


def test_value_types_accept_the_shipped_configs_and_ints_for_floats() -> None:
    check_value_types({"trainer": {"lr": 1, "max_steps": 3}, "build": {"threads": "auto", "mkl_cbwr": None}})
    with pytest.raises(ConfigError, match="build.deterministic: expected bool, got 1 "):
        check_value_types({"build": {"deterministic": 1}})


@pytest.mark.skipif(os.environ.get("CUDA_VISIBLE_DEVICES") is None and Path("/dev/nvidia0").exists(),
                    reason="this machine has a GPU")
def test_cuda_pin_without_a_gpu_exits_3_and_writes_nothing(project: Path) -> None:
    before = sorted(p.name for p in project.iterdir())
    res = run_repro(["train", "--quiet", "build.device=cuda", "out_dir=o"], cwd=project)
    assert res.code == 3
    assert "build.device=cuda: this machine has no usable CUDA device" in _one_line(res.stderr)
    assert sorted(p.name for p in project.iterdir()) == before  # no out_dir, no stat cache: nothing hashed


def test_output_error_names_path_and_cause() -> None:
    exc = output_error(OSError(errno.ENOSPC, "No space left on device"), "/x/model.safetensors")
    assert isinstance(exc, OutputError) and exc.exit_code == 6 and 6 in EXIT_CODES
    assert str(exc) == "/x/model.safetensors: cannot write: no space left on device (ENOSPC)"
    assert "read-only filesystem (EROFS)" in str(output_error(OSError(errno.EROFS, "x", "/y")))


def test_staged_files_replace_all_or_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    atomic_write_bytes(tmp_path / "a", b"old a")
    real = os.fsync
    calls = []

    def fail_second(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fail_second)
    with pytest.raises(OutputError, match=r"/b: cannot write: no space left on device \(ENOSPC\)"), \
            StagedFiles() as staged:
        staged.add(tmp_path / "a", b"new a")
        staged.add(tmp_path / "b", b"new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert (tmp_path / "a").read_bytes() == b"old a"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A 96 KiB tmpfs when we may mount one (root), else a folder written under RLIMIT_FSIZE."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = os.geteuid() == 0 and not os.environ.get("REPRO_TEST_NO_TMPFS") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)], capture_output=True).returncode == 0
    yield disk, "tmpfs" if mounted else "rlimit"
    if mounted:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _train_limited(args: list[str], cwd: Path, fsize: int | None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:  # beyond the limit, write() fails with EFBIG instead of killing us with SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "repro", "train", "--quiet", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, preexec_fn=limit if fsize else None)


@pytest.fixture(scope="module")
def earlier_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny build's out_dir, trained once for the module: the outputs a failing run must keep."""
    project = make_project(tmp_path_factory.mktemp("failures") / "project")
    first = _train_limited([*TINY, "trainer.checkpoint_every=0", "out_dir=o"], project, None)
    assert first.returncode == 0, first.stderr
    return project / "o"


@pytest.mark.parametrize("checkpoint_every", [0, 5])
def test_a_full_disk_exits_6_naming_the_path_and_keeps_the_earlier_outputs(
        project: Path, small_disk: tuple[Path, str], earlier_outputs: Path, checkpoint_every: int) -> None:
    disk, kind = small_disk
    out = disk / "o"
    shutil.copytree(earlier_outputs, out)  # the earlier build's outputs, on the small disk
    before = {p.name: sha256_file(p) for p in out.iterdir()}
    if kind == "tmpfs":  # fill the disk to its last few KiB
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as fh, pytest.raises(OSError):
            while True:
                fh.write(b"\0" * 1024)
        fsize = None
    else:  # the weights file (about 19 KB) is over the limit
        fsize = 8192
    res = _train_limited([*TINY, "seed=3", f"trainer.checkpoint_every={checkpoint_every}", f"out_dir={out}"],
                         project, fsize)
    assert res.returncode == 6, res.stderr
    line = _one_line(res.stderr)
    cause = "no space left on device (ENOSPC)" if kind == "tmpfs" else "(EFBIG)"
    assert cause in line
    if kind == "rlimit":  # the limit holds for every file, also the temp files of `datasets`: they may go first
        assert {p.name: sha256_file(p) for p in out.iterdir()} == before
        return
    assert f"{out}/" in line
    assert ("checkpoints/step-00000005" in line) == bool(checkpoint_every)
    assert {p.name: sha256_file(p) for p in out.iterdir()} == before  # no temp file, earlier outputs intact


def test_a_read_only_out_dir_exits_6(project: Path, small_disk: tuple[Path, str]) -> None:
    disk, kind = small_disk
    if kind != "tmpfs":
        pytest.skip("needs a mount to remount read-only")
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    res = run_repro(["train", "--quiet", *TINY, f"out_dir={disk}/o"], cwd=project)
    assert res.code == 6
    assert f"{disk}/o: cannot write: read-only filesystem (EROFS)" in _one_line(res.stderr)
