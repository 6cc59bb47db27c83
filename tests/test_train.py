"""End-to-end `repro train`: determinism, digests, and user errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY, bit_deciding_pin, make_project, run_repro, sha256_file

from repro.cli import main

pytestmark = pytest.mark.slow


def _train(project: Path, out: str, *extra: str, env: dict[str, str] | None = None,
           prefix: list[str] | None = None) -> Path:
    r = run_repro(["train", "--quiet", *TINY, f"out_dir={out}", *extra], cwd=project, env=env, prefix=prefix)
    assert r.code == 0, r.stderr
    return project / out


def _lock(out: Path) -> dict:
    return json.loads((out / "repro.lock").read_text())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build of the tiny default config in a project of its own, which the tests below
    compare their variant builds against. Read-only: a test that changes files uses `project`."""
    return _train(make_project(tmp_path_factory.mktemp("base") / "project"), "base")


def test_two_fresh_processes_give_identical_bytes(base: Path, project: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    shutil.copytree(project, other)
    b = _train(other, "nested/run-b")
    assert sha256_file(base / "model.safetensors") == sha256_file(b / "model.safetensors")
    assert (base / "repro.lock").read_bytes() == (b / "repro.lock").read_bytes()
    lock = _lock(base)
    assert lock["outputs"]["weights"]["hashes"]["sha256"] == sha256_file(base / "model.safetensors")
    for built in (base, b):
        raw = (built / "repro.lock").read_text()
        assert str(built.parent.parent) not in raw and "hostname" not in raw


# Every variable measured or reported to move the bits (docs/environment.md), set
# the wrong way, plus a locale, a hash seed and one core through taskset.
NOISY_SHELL = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_DYNAMIC": "true",
    "MKL_DYNAMIC": "true", "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_DEBUG_CPU_TYPE": "5", "OMP_PROC_BIND": "true",
    "KMP_AFFINITY": "compact", "PYTHONHASHSEED": "123", "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0",
}


def test_a_noisy_shell_changes_neither_weights_nor_lock(base: Path, project: Path) -> None:
    noisy = _train(project, "noisy", env=NOISY_SHELL, prefix=["taskset", "-c", "0"])
    assert sha256_file(base / "model.safetensors") == sha256_file(noisy / "model.safetensors")
    assert (base / "repro.lock").read_bytes() == (noisy / "repro.lock").read_bytes()
    env = _lock(base)["build"]["env"]
    assert env["PYTHONHASHSEED"] == "0" and env["OMP_DYNAMIC"] == "FALSE"


def test_pins_are_recorded_and_a_bit_deciding_one_changes_the_weights(base: Path, project: Path) -> None:
    one = _train(project, "t1", "build.threads=1")
    assert _lock(one)["build"]["threads"] == 1 and _lock(base)["build"]["threads"] == 2
    assert _lock(one)["build"]["flags"]["threads"] == 1  # what torch ran with, not just what was asked
    key, value = bit_deciding_pin(project, sha256_file(base / "model.safetensors"))
    probe = _lock(project / f"probe-{key}")
    assert probe["build"][key] == value and probe["inputs"]["config"]["resolved"]["build"][key] == value


def test_config_override_reaches_config_digest_and_weights(base: Path, project: Path) -> None:
    a, b = _lock(base), _lock(_train(project, "b", "model.hidden=32"))
    assert a["inputs"]["config"]["sha256"] != b["inputs"]["config"]["sha256"]
    assert b["inputs"]["config"]["resolved"]["model"]["hidden"] == 32
    assert a["outputs"]["weights"]["hashes"] != b["outputs"]["weights"]["hashes"]


def test_one_data_byte_changes_file_digest_and_root(base: Path, project: Path) -> None:
    a = _lock(base)
    csv = project / "repro" / "examples" / "digits" / "digits.csv"
    raw = bytearray(csv.read_bytes())
    idx = raw.index(b"\n") + 1  # first pixel of the first row
    raw[idx : idx + 1] = b"1" if raw[idx : idx + 1] != b"1" else b"2"
    csv.write_bytes(bytes(raw))
    b = _lock(_train(project, "b"))
    fa, fb = a["inputs"]["data"]["files"][0], b["inputs"]["data"]["files"][0]
    assert fa["path"] == fb["path"] == "repro/examples/digits/digits.csv"
    assert fa["hashes"]["sha256"] != fb["hashes"]["sha256"] == sha256_file(csv)
    assert a["inputs"]["data"]["root_digest"] != b["inputs"]["data"]["root_digest"]


def test_seed_changes_sample_order_digest(base: Path, project: Path) -> None:
    a, b = _lock(base), _lock(_train(project, "b", "seed=7"))
    assert a["inputs"]["data"]["sample_order"]["sha256"] != b["inputs"]["data"]["sample_order"]["sha256"]
    assert a["inputs"]["data"]["sample_order"]["count"] == 20 * 64


def test_outputs_and_metrics_file(base: Path) -> None:
    out = base
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "metrics.jsonl", "model.safetensors", "repro.lock", "run.json", "step_digests.txt"]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [5, 10, 15, 20]
    lock = _lock(out)
    assert lock["outputs"]["loss_trajectory"]["losses"] == [x["loss"] for x in lines]
    assert lock["outputs"]["final_loss"] == lines[-1]["loss"]
    names = [t["name"] for t in lock["outputs"]["weights"]["tensors"]]
    assert names == sorted(names) and "net.0.weight" in names


def test_embedded_example_reaches_95_percent(tmp_path: Path) -> None:
    """No configs/ here: the example shipped in the package trains, full length."""
    r = run_repro(["train", "--quiet"], cwd=tmp_path)
    assert r.code == 0, r.stderr
    lock = _lock(tmp_path / "out" / "digits")
    assert lock["outputs"]["metrics"]["accuracy"] >= 0.95
    assert "out_dir" in r.stdout and lock["outputs"]["weights"]["hashes"]["sha256"] in r.stdout


def test_cli_in_process(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(project)
    # torch may already be loaded at another level in this process: pin to whatever it uses, which
    # build=native allows (the default profile allows only the levels every x86-64 CPU runs alike).
    import torch

    level = torch.backends.cpu.get_cpu_capability().lower()
    assert main(["train", "--quiet", *TINY, "build=native", f"build.cpu_capability={level}", "out_dir=inproc"]) == 0
    assert "weights      sha256" in capsys.readouterr().out
    assert (project / "inproc" / "repro.lock").is_file()


@pytest.mark.parametrize(("args", "needle"), [
    (["model.hiddenx=3"], "hiddenx"),
    (["data.data_files=[nothere.csv]"], "nothere.csv"),
    (["model._target_=nowhere.Model"], "model._target_"),
    (["build.threads=0"], "build.threads"),
    (["trainer.batch_size=100000"], "trainer.batch_size"),
    (["~task"], "config group task: missing"),  # checked before anything is hashed or locked
    (["~trainer.optimizer"], "config key trainer.optimizer._target_: missing"),
    (["+model.bogus=1"], "unknown key model.bogus: not a parameter of repro.models.MLP("),  # its signature
])
def test_user_errors_are_one_line_exit_2_no_traceback(project: Path, args: list[str], needle: str) -> None:
    r = run_repro(["train", "--quiet", *TINY, *args], cwd=project)
    assert r.code == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr
    assert not (project / "out").exists()
