"""`repro train` as a Hydra app: multirun sweeps with a lock per job, --cfg, --info, --help."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import TINY, make_project, run_repro, sha256_file

from repro.source.config import hashed_view

SWEEP = ["-m", "--quiet", "seed=0,1", *TINY, "out_dir=out"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A two-job sweep over seeds, run once for the module: (project, stdout)."""
    project = make_project(tmp_path_factory.mktemp("sweep") / "project")
    res = run_repro(["train", *SWEEP], cwd=project)
    assert res.code == 0, res.stderr
    return project, res.stdout


def _summary(project: Path) -> dict:
    return json.loads((project / "out" / "multirun" / "sweep.json").read_text())


@pytest.mark.slow
def test_a_sweep_writes_a_lock_per_job_and_a_canonical_summary(swept: tuple[Path, str]) -> None:
    project, stdout = swept
    summary = _summary(project)
    assert [j["num"] for j in summary["jobs"]] == [0, 1]
    assert [j["overrides"][0] for j in summary["jobs"]] == ["seed=0", "seed=1"]
    for job in summary["jobs"]:
        lock = project / "out" / "multirun" / job["out_dir"] / "repro.lock"
        assert job["status"] == "ok" and job["exit_code"] == 0
        assert job["lock_sha256"] == sha256_file(lock)
        assert job["metrics"] == json.loads(lock.read_text())["outputs"]["metrics"]
        assert json.loads(lock.read_text())["build"]["seed"] == job["num"]
    assert len({j["lock_sha256"] for j in summary["jobs"]}) == 2
    raw = (project / "out" / "multirun" / "sweep.json").read_bytes()
    assert raw == (json.dumps(summary, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()
    assert "(2 ok, 0 failed)" in stdout


@pytest.mark.slow
def test_a_rerun_gives_identical_bytes_and_a_jobs_lock_verifies(swept: tuple[Path, str]) -> None:
    """One job's lock is verified: the jobs differ only by seed, and the test below shows a job's
    lock is byte for byte the lock a single `repro train` writes (which test_verify verifies)."""
    project, _ = swept
    sweep_dir = project / "out" / "multirun"
    before = {p.relative_to(sweep_dir): sha256_file(p) for p in sweep_dir.glob("**/*")
              if p.name in ("repro.lock", "model.safetensors", "sweep.json")}
    assert len(before) == 5
    res = run_repro(["train", *SWEEP], cwd=project)
    assert res.code == 0, res.stderr
    assert {p: sha256_file(sweep_dir / p) for p in before} == before
    res = run_repro(["verify", "--quiet", "out/multirun/1/repro.lock"], cwd=project)
    assert res.code == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_a_job_is_the_build_a_single_run_would_be(swept: tuple[Path, str], tmp_path: Path) -> None:
    project, _ = swept
    res = run_repro(["train", "--quiet", "seed=1", *TINY, f"out_dir={tmp_path}/single"], cwd=project)
    assert res.code == 0, res.stderr
    assert sha256_file(tmp_path / "single" / "repro.lock") == _summary(project)["jobs"][1]["lock_sha256"]


@pytest.mark.slow
def test_a_bad_value_fails_its_job_only_and_the_sweep_exits_non_zero(swept: tuple[Path, str]) -> None:
    project, _ = swept
    res = run_repro(["train", "-m", "--quiet", "trainer.lr=abc,0.01", *TINY, "out_dir=bad"], cwd=project)
    assert res.code == 2, res.stderr
    assert "Traceback" not in res.stderr
    jobs = json.loads((project / "bad" / "multirun" / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["failed", "ok"]
    assert jobs[0]["exit_code"] == 2
    assert jobs[0]["error"] == "config key trainer.lr: expected float, got 'abc' (str)"
    assert not (project / "bad" / "multirun" / "0" / "repro.lock").exists()
    # The good job is seed 0 with the default lr: the same build as the first sweep's job 0.
    assert jobs[1]["lock_sha256"] == _summary(project)["jobs"][0]["lock_sha256"]
    assert "FAILED (exit 2)" in res.stdout and "(1 ok, 1 failed)" in res.stdout


@pytest.mark.slow
def test_cfg_job_resolve_shows_the_values_that_get_hashed(swept: tuple[Path, str]) -> None:
    project, _ = swept
    res = run_repro(["train", "--cfg", "job", "--resolve", "seed=0", *TINY, "out_dir=out"], cwd=project)
    assert res.code == 0, res.stderr
    lock = json.loads((project / "out" / "multirun" / "0" / "repro.lock").read_text())
    assert hashed_view(yaml.safe_load(res.stdout)) == lock["inputs"]["config"]["resolved"]


def test_a_sweep_refused_by_hydra_runs_no_job(project: Path) -> None:
    res = run_repro(["train", "-m", "--quiet", "model=mlp,nope", "out_dir=out"], cwd=project)
    assert res.code == 2
    assert res.stderr.count("\n") == 1 and "config group model: no option 'nope'" in res.stderr
    assert not (project / "out" / "multirun" / "0" / "repro.lock").exists()


def test_a_sweep_without_multirun_is_refused(project: Path) -> None:
    res = run_repro(["train", "seed=0,1", "out_dir=out"], cwd=project)
    assert res.code == 2 and "--multirun" in res.stderr and "Traceback" not in res.stderr


def test_cfg_prints_hydra_and_package_views(project: Path) -> None:
    res = run_repro(["train", "--cfg", "job", "--package", "trainer", "trainer.lr=0.5"], cwd=project)
    assert res.code == 0 and res.stdout.startswith("# @package trainer\n")
    assert yaml.safe_load(res.stdout)["lr"] == 0.5
    hydra = run_repro(["train", "--cfg", "hydra"], cwd=project)
    assert hydra.code == 0 and "sweeper:" in hydra.stdout and "seed:" not in hydra.stdout
    unresolved = run_repro(["train", "--cfg", "job"], cwd=project)
    assert "lr: ${trainer.lr}" in unresolved.stdout
    missing = run_repro(["train", "--cfg", "job", "--package", "nope"], cwd=project)
    assert missing.code == 2 and missing.stderr.count("\n") == 1


def test_info_and_help_list_the_config_groups_and_options(project: Path) -> None:
    (project / "configs" / "model" / "wide.yaml").write_text("_target_: repro.models.MLP\nhidden: 256\n")
    info = run_repro(["train", "--info"], cwd=project)
    assert info.code == 0
    assert "Config search path" in info.stdout and str(project / "configs") in info.stdout
    assert "model: mlp, wide" in info.stdout and "trainer: default\n" in info.stdout
    helped = run_repro(["train", "--help"], cwd=project)
    assert helped.code == 0 and "--multirun" in helped.stdout
    assert "== Configuration groups ==" in helped.stdout and "model: mlp, wide" in helped.stdout
    assert "build: default, native" in helped.stdout


def test_help_works_without_a_project(tmp_path: Path) -> None:
    shutil.rmtree(tmp_path, ignore_errors=True)
    tmp_path.mkdir()
    res = run_repro(["train", "-h"], cwd=tmp_path)
    assert res.code == 0 and "data: digits" in res.stdout


def test_help_still_shows_the_flags_when_the_config_is_broken(project: Path) -> None:
    res = run_repro(["train", "--help", "model=nope"], cwd=project)
    assert res.code == 0 and "--multirun" in res.stdout
    assert "the config groups cannot be listed" in res.stdout and "no option 'nope'" in res.stdout
