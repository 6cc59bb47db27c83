"""`repro check` and the per-step digests: real builds in real processes, on fixture models
with known sources of nondeterminism (tests/fixtures/check/check_models.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from repro.lock.lockdiff import first_differing_step
from repro.lock.lockfile import read, read_step_digests
from repro.train.opdiff import ulp_distance
from tests.conftest import TINY, run_repro, sha256_file

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "check"
MODELS = ("ReadsEnv", "Racy", "OwnNoise", "SetOrder")


@pytest.fixture
def fixture_project(project: Path) -> Path:
    """The digits project plus the fixture models, each selectable as `model=<name lowercased>`."""
    shutil.copy2(FIXTURE / "check_models.py", project / "check_models.py")
    for name in MODELS:
        (project / "configs" / "model" / f"{name.lower()}.yaml").write_text(
            f"_target_: check_models.{name}\nhidden: 16\n", encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)  # the path axis copies what a clone holds
    return project


def check(project: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_repro(["check", "--json", *args], cwd=project)
    assert result.code in (0, 1), result.stderr
    return result.code, json.loads(result.stdout)["result"]


def row(report: dict[str, Any], axis: str) -> dict[str, Any]:
    return next(r for r in report["axes"] if r["axis"] == axis)


def test_first_differing_step_counts_the_initial_parameters_as_step_0() -> None:
    assert first_differing_step(["a", "b", "c"], ["a", "b", "c"]) is None
    assert first_differing_step(["a", "b", "c"], ["a", "x", "c"]) == 1
    assert first_differing_step(["x", "b"], ["a", "b"]) == 0
    assert first_differing_step(["a", "b"], ["a", "b", "c"]) == 2


def test_ulp_distance_counts_elements_and_units_in_the_last_place() -> None:
    a = torch.tensor([1.0, 2.0, -3.0, 0.0])
    b = a.clone()
    b[0] = torch.nextafter(a[0], torch.tensor(2.0))
    b[2] = torch.nextafter(torch.nextafter(a[2], torch.tensor(0.0)), torch.tensor(0.0))
    assert ulp_distance(a, b) == (2, 2)
    assert ulp_distance(a, a.clone()) == (0, 0)
    assert ulp_distance(torch.tensor([0.0]), torch.tensor([-0.0])) == (1, 0)  # other bits, same number


def _recording(folder: Path, steps: dict[int, list[str]]) -> Path:
    """A recording as the op recorder saves one: per step, one op per digest (no values kept)."""
    ops = [{"index": i, "step": step, "position": pos, "op": "aten::mm.default", "phase": "forward",
            "module": "net", "shape": [2, 2], "dtype": "float32", "sha256": digest, "kept": False}
           for i, (step, pos, digest) in enumerate((s, p, d) for s, ds in steps.items() for p, d in enumerate(ds))]
    folder.mkdir(parents=True)
    (folder / "ops.json").write_text(json.dumps({"version": 1, "step": max(steps), "ops": ops}))
    return folder


def test_first_difference_compares_only_the_steps_asked_about_and_both_recorded(tmp_path: Path) -> None:
    """A build records all its steps; localizing step k compares steps up to k, and a resumed run's
    recording (from its checkpoint on) is compared on the steps both hold."""
    from repro.train.opdiff import first_difference

    base = _recording(tmp_path / "base", {1: ["a", "b"], 2: ["c", "d"], 3: ["e", "f"]})
    later = _recording(tmp_path / "later", {1: ["a", "b"], 2: ["c", "d"], 3: ["e", "X"]})
    assert first_difference(base, later, upto=2) is None
    found = first_difference(base, later, upto=3)
    assert found is not None and (found["step"], found["position"], found["kind"]) == (3, 1, "values differ")
    assert first_difference(base, later) == found
    resumed = _recording(tmp_path / "resumed", {3: ["e", "X"]})
    assert first_difference(base, resumed, upto=2) is None
    assert first_difference(base, resumed, upto=3) == found


def test_every_build_records_per_step_digests_in_the_lock(project: Path) -> None:
    result = run_repro(["train", "--quiet", *TINY, "out_dir=o"], cwd=project)
    assert result.code == 0, result.stderr
    lock = read(project / "o" / "repro.lock")
    record = lock["outputs"]["step_digests"]
    assert record["path"] == "step_digests.txt" and record["steps"] == 20
    assert sha256_file(project / "o" / "step_digests.txt") == record["sha256"]
    digests = read_step_digests(project / "o", lock)
    assert digests is not None and len(digests) == 21 and len(set(digests)) == 21


@pytest.mark.slow
def test_a_model_reading_the_environment_is_named_by_the_shell_axis_and_its_op(fixture_project: Path) -> None:
    code, report = check(fixture_project, "model=readsenv", "--axes", "again,shell,path", "--steps", "3")
    assert code == 1
    assert row(report, "again")["result"] == "identical" and row(report, "path")["result"] == "identical"
    shell = row(report, "shell")
    assert shell["result"] == "different" and shell["promised"] and shell["first_step"] == 1
    op = shell["first_op"]
    assert op["op"].startswith("aten::mul") and op["phase"] == "forward" and op["module"] == "ReadsEnv"
    assert op["differing"] > 0 and op["shapes"] == [[64, 10]]
    # The card shows the latest table.
    assert run_repro(["train", "--quiet", "model=readsenv", "trainer.max_steps=2"], cwd=fixture_project).code == 0
    assert json.loads((fixture_project / "out" / "digits" / "check.json").read_text())["axes"] == report["axes"]
    assert run_repro(["card", "out/digits"], cwd=fixture_project).code == 0
    card = (fixture_project / "out" / "digits" / "README.md").read_text()
    assert "## Reproducibility check (`repro check`)" in card
    assert "| shell | noisy shell | different | yes | 1 |" in card


@pytest.mark.slow
def test_a_nondeterministic_op_switched_on_by_the_model_is_named(fixture_project: Path) -> None:
    code, report = check(fixture_project, "model=racy", "--axes", "again", "--steps", "8")
    assert code == 1
    again = row(report, "again")
    assert again["result"] == "different"
    assert again["first_op"]["op"].startswith("aten::index_put"), again


@pytest.mark.slow
def test_a_resume_that_forgets_an_rng_state_shows_on_the_resume_axis(fixture_project: Path) -> None:
    code, report = check(fixture_project, "model=ownnoise", "--axes", "again,resume", "--steps", "4")
    assert code == 1
    assert row(report, "again")["result"] == "identical"
    resume = row(report, "resume")
    assert resume["result"] == "different" and resume["first_step"] == 3  # killed after step 2
    assert resume["first_op"]["op"].startswith("aten::randn") and resume["first_op"]["phase"] == "forward"


@pytest.mark.slow
def test_the_digits_example_survives_the_axes_its_profile_promises_on_one_machine(project: Path) -> None:
    code, report = check(project, "--axes", "again,cores,hashseed,resume", "--steps", "2")
    assert code == 0, report
    assert {r["result"] for r in report["axes"]} == {"identical"}


@pytest.mark.slow
def test_verify_names_the_first_differing_step_and_with_localize_its_op(fixture_project: Path) -> None:
    """The lock is built in a clean shell, rebuilt in another: COLUMNS passes the build's allowlist
    (the terminal's width), and ReadsEnv scales its logits by it, so the first step differs.
    `--localize` finds that this machine in a clean shell reproduces the lock, replays the step
    there and in the rebuild's own conditions, and names the op that parts them."""
    steps = ["trainer.max_steps=3", "trainer.log_every=1"]
    built = run_repro(["train", "--quiet", "model=readsenv", *steps, "out_dir=o"], cwd=fixture_project,
                      env={"COLUMNS": "80"})
    assert built.code == 0, built.stderr
    # Outside git, with the data not beside the lock, the project root is named (else verify
    # would fall back to the installed package's folder, which holds the digits data but not
    # check_models.py, and report the module as removed before any rebuild).
    result = run_repro(["verify", "--json", "o/repro.lock", "--root", ".", "--no-record", "--localize"],
                       cwd=fixture_project, env={"COLUMNS": "37"})
    assert result.code == 1, result.stderr
    report = json.loads(result.stdout)["result"]
    diffs = report["differences"]
    assert not [d for d in diffs if d["section"] == "inputs"], diffs
    step = next(d for d in diffs if d["kind"] == "step")
    assert step["name"] == "step 1" and step["stats"] == {"first_step": 1}
    op = report["rebuild"]["localized"]
    assert op["environment"] == "this machine, a clean shell", op
    assert op["step"] == 1 and op["op"].startswith("aten::mul") and op["phase"] == "forward"
    assert op["module"] == "ReadsEnv" and op["shapes"] == [[64, 10]] and op["differing"] > 0


qemu = pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="qemu-user is not installed")


@pytest.mark.slow
@qemu
def test_the_default_profile_gives_the_same_bits_on_an_emulated_cpu_of_another_vendor(project: Path) -> None:
    """The default profile's promise, checked by the tool: the embedded example (torch.optim.Adam,
    unchanged) under qemu's AMD EPYC; SGD with Nesterov momentum under qemu's Intel Haswell. Both
    emulated CPUs run the AVX2 kernels; this host runs its widest (AVX-512 where it has it)."""
    code, report = check(project, "--axes", "cpu:EPYC", "--steps", "2")
    cpu = row(report, "cpu")
    assert code == 0 and cpu["promised"] and cpu["result"] == "identical", cpu
    sgd = ["trainer.optimizer._target_=torch.optim.SGD", "+trainer.optimizer.momentum=0.9",
           "+trainer.optimizer.nesterov=true"]
    code, report = check(project, *sgd, "--axes", "cpu:Haswell", "--steps", "2")
    cpu = row(report, "cpu")
    assert code == 0 and cpu["promised"] and cpu["result"] == "identical", cpu
