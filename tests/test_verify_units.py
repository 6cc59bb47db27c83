"""verify's checks as pure functions: root finding, pin consistency, machine checks. No training."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from repro.builder.rebuild import rebuild_config
from repro.errors import EnvironmentMismatch, LockfileError, UserInputError
from repro.source.inputs import PACKAGE_DIR
from repro.verify.checks import machine_check, pin_consistency, toolchain_check
from repro.verify.verifier import find_root

GOLDEN = Path(__file__).parent / "fixtures" / "lockfile" / "golden-v2.lock"
BUILD_CFG = {"profile": "default", "device": "cpu", "threads": 2, "cpu_capability": "avx2", "precision": "fp32",
             "world_size": 1, "deterministic": True, "mkldnn": False, "mkl_cbwr": "COMPATIBLE", "kernels": "portable",
             "unportable": "refuse"}


def lock() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN.read_text())
    data["inputs"]["config"]["resolved"]["build"] = copy.deepcopy(BUILD_CFG)
    return data


def test_root_is_explicit_then_git_then_nearest_data_folder(tmp_path: Path) -> None:
    project = tmp_path / "repo" / "sub"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.csv").write_text("x\n")
    (project / "out" / "run").mkdir(parents=True)
    lock_path = project / "out" / "run" / "repro.lock"
    nearest = (project.resolve(), "the nearest folder above the lockfile holding its data")
    with pytest.raises(UserInputError, match="pass --root"):  # outside git: never above the lock's folder
        find_root(lock_path, lock(), None)
    assert find_root(lock_path, lock(), tmp_path)[0] == tmp_path.resolve()
    with pytest.raises(UserInputError, match="--root"):
        find_root(lock_path, lock(), tmp_path / "missing")
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert find_root(lock_path, lock(), None) == nearest  # the repository does not hold data/train.csv
    (repo / "data").mkdir()
    (repo / "data" / "train.csv").write_text("x\n")
    assert find_root(lock_path, lock(), None) == (repo.resolve(), "the git repository holding the lockfile")


def test_root_falls_back_to_the_installed_package_then_git_then_fails(tmp_path: Path) -> None:
    embedded = lock()
    embedded["inputs"]["data"]["files"][0]["path"] = "repro/examples/digits/digits.csv"
    assert find_root(tmp_path / "repro.lock", embedded, None)[0] == PACKAGE_DIR.parent
    with pytest.raises(UserInputError, match="cannot tell the project root.*pass --root"):
        find_root(tmp_path / "repro.lock", lock(), None)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    # No folder holds the data: the repository, so that the missing file gets named later.
    assert find_root(tmp_path / "repro.lock", lock(), None)[0] == tmp_path.resolve()


def test_pin_consistency_names_the_edited_pin() -> None:
    assert pin_consistency(lock()) == []
    edited = lock()
    edited["build"]["threads"] = 1
    [d] = pin_consistency(edited)
    assert (d.kind, d.name, d.old, d.new) == ("pin", "threads", 2, 1)
    edited["build"]["flags"] = {"threads": 2, "mkldnn": False}  # what torch reported at build time
    [_, flag] = pin_consistency(edited)
    assert (flag.name, flag.old, flag.new) == ("threads", 2, 1) and "torch reported threads=2" in flag.detail


def test_rebuild_config_applies_the_build_sections_pins() -> None:
    edited = lock()
    edited["build"].update(threads=1, seed=5)
    resolved, pins = rebuild_config(edited)
    assert resolved["build"]["threads"] == 1 == pins.threads and resolved["seed"] == 5 == pins.seed
    assert edited["inputs"]["config"]["resolved"]["build"]["threads"] == 2  # the lock itself is untouched


def _installed(monkeypatch: pytest.MonkeyPatch, torch: str) -> None:
    monkeypatch.setattr("repro.verify.checks.installed_versions",
                        lambda names: {n: {"torch": torch, "numpy": "2.4.6"}.get(n) for n in names})
    monkeypatch.setattr("repro.verify.checks.interpreter_facts", lambda: {k: lock()["toolchain"][k]
                                                                          for k in ("python", "platform")})
    monkeypatch.setattr("repro.verify.checks.machine_cores", lambda: 2)
    monkeypatch.setattr("repro.verify.checks.check_capability", lambda level: None)


def test_toolchain_drift_is_a_note_and_never_stops_a_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, "2.14.1")
    assert machine_check(lock(), rebuilding=True) == []
    notes = toolchain_check(lock()["toolchain"])
    got = {(n.section, n.kind, n.name, n.old, n.new) for n in notes}
    assert ("toolchain", "distribution", "torch", "2.13.0+cpu", "2.14.1") in got
    assert ("toolchain", "torch", "torch.version", "2.13.0+cpu", "2.14.1") in got
    assert ("toolchain", "torch", "torch.build", "cpu", None) in got


def test_machine_check_capability_and_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, "2.13.0+cpu")
    monkeypatch.setattr("repro.verify.checks.machine_cores", lambda: 1)
    [note] = machine_check(lock(), rebuilding=True)
    assert (note.name, note.old, note.new) == ("threads", 2, 1) and "the pin of 2 is applied" in note.detail


def test_machine_check_refuses_a_level_this_cpu_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    arm = lock()
    arm["build"]["cpu_capability"] = "sve256"
    monkeypatch.setattr("repro.verify.checks.machine_cores", lambda: 2)
    with pytest.raises(EnvironmentMismatch, match="sve256"):
        machine_check(arm, rebuilding=True)
    [note] = machine_check(arm, rebuilding=False)
    assert (note.name, note.old) == ("cpu_capability", "sve256")


def test_an_unusable_signing_key_is_named_before_anything_is_read(tmp_path: Path) -> None:
    from repro.verify.report import VerifyOptions
    from repro.verify.verifier import verify

    with pytest.raises(UserInputError, match="missing.pem"):
        verify(VerifyOptions(lock_path=tmp_path / "no.lock", signing_key=tmp_path / "missing.pem"))


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside/repro.lock"])
def test_verify_recursive_never_follows_a_base_lock_out_of_the_project(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    from repro.verify import recursive as chain
    from repro.verify.report import VerifyOptions, VerifyReport

    base = {"path": "base", "files": [], "root_digest": "0" * 64, "status": "locked", "lock": {"path": path}}
    report = VerifyReport("repro.lock", str(tmp_path), "--root", "inputs-only", {}, base=base)
    monkeypatch.setattr(chain, "verify", lambda opts: report)
    with pytest.raises(LockfileError, match="inputs.base.lock.path"):
        chain.verify_chain(VerifyOptions(lock_path=tmp_path / "repro.lock", inputs_only=True), [])
