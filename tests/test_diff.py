"""`repro diff` and the comparison vocabulary verify shares. No training needed."""

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

from repro.cli import main
from repro.lock.lockdiff import (
    Difference,
    compare_files,
    compare_locks,
    first_loss_difference,
    flatten,
    render,
)
from repro.lock.lockfile import logged_steps

GOLDEN = Path(__file__).parent / "fixtures" / "lockfile" / "golden-v2.lock"
H1, H2, H3 = "11" * 32, "22" * 32, "33" * 32


def golden() -> dict[str, Any]:
    return dict(json.loads(GOLDEN.read_text()))


def f(path: str, digest: str, size: int = 3) -> dict[str, Any]:
    return {"path": path, "size": size, "hashes": {"sha256": digest}}


def test_identical_locks_have_no_differences() -> None:
    assert compare_locks(golden(), golden()) == []


def test_files_changed_added_removed_and_renamed() -> None:
    a = [f("a.csv", H1), f("b.csv", H2), f("c.csv", H3)]
    b = [f("a.csv", H2), f("d.csv", H1, 4), f("e.csv", H3)]
    got = [(d.change, d.name, d.old, d.new) for d in compare_files("data", a, b)]
    assert got == [
        ("changed", "a.csv", H1, H2),
        ("added", "d.csv", None, H1),
        ("renamed", "e.csv", "c.csv", "e.csv"),
        ("removed", "b.csv", H2, None),
    ]


def test_config_keys_are_named_with_both_values() -> None:
    a, b = golden(), golden()
    b["inputs"]["config"]["resolved"]["trainer"]["lr"] = 0.02
    b["inputs"]["config"]["resolved"]["model"] = {"hidden": 8}
    b["inputs"]["config"]["sha256"] = H1
    got = [(d.section, d.kind, d.name, d.change, d.old, d.new) for d in compare_locks(a, b)]
    assert got == [
        ("inputs", "config", "model.hidden", "added", None, 8),
        ("inputs", "config", "trainer.lr", "changed", 0.01, 0.02),
    ]


def test_config_digest_alone_differing_is_still_reported() -> None:
    a, b = golden(), golden()
    b["inputs"]["config"]["sha256"] = H1
    [d] = compare_locks(a, b)
    assert (d.kind, d.name, d.old, d.new) == ("config", "sha256", "ab" * 32, H1)


def test_pins_flags_and_the_toolchain_are_separate_kinds() -> None:
    a, b = golden(), golden()
    b["build"].update(threads=1, flags={"threads": 1})
    b["toolchain"]["distributions"]["torch"] = "2.14.1"
    b["toolchain"]["repro"]["files"][0]["hashes"]["sha256"] = H1
    got = [(d.section, d.kind, d.name, d.old, d.new) for d in compare_locks(a, b)]
    assert got == [
        ("build", "pin", "threads", 2, 1),
        ("build", "flag", "flags.threads", None, 1),
        ("toolchain", "distribution", "torch", "2.13.0+cpu", "2.14.1"),
        ("toolchain", "compiler", "repro/build/run.py", "ab" * 32, H1),
    ]


def test_outputs_name_tensors_and_the_first_differing_step() -> None:
    a, b = golden(), golden()
    b["outputs"]["weights"]["hashes"]["sha256"] = H1
    b["outputs"]["weights"]["tensors"][0]["sha256"] = H2
    b["outputs"]["loss_trajectory"]["losses"] = [0.5, 0.25]
    b["outputs"]["final_loss"] = 0.25
    got = [(d.kind, d.name) for d in compare_locks(a, b)]
    assert got == [("weights", "model.safetensors"), ("tensor", "w"), ("loss", "step 2"), ("loss", "final")]


def trajectory(losses: list[float], every: int, steps: int, sha: str = H1) -> dict[str, Any]:
    return {"every": every, "steps": steps, "losses": losses, "sha256": sha}


def test_logged_steps_follow_the_writer() -> None:
    # build.loss_trajectory keeps every N-th step and the last one.
    assert logged_steps(20, 5) == [5, 10, 15, 20]
    assert logged_steps(25, 10) == [10, 20, 25]


def test_first_loss_difference_names_the_step_and_what_agrees() -> None:
    a = trajectory([1.0, 0.9, 0.8, 0.7], 5, 20)
    b = trajectory([1.0, 0.9, 0.81, 0.7], 5, 20, H2)
    d = first_loss_difference(a, b)
    assert d is not None and (d.name, d.old, d.new) == ("step 15", 0.8, 0.81)
    assert "steps up to 10 agree" in d.detail
    hidden = first_loss_difference(a, trajectory([1.0, 0.9, 0.8, 0.7], 5, 20, H2))
    assert hidden is not None and hidden.name == "trajectory" and "unlogged step" in hidden.detail
    assert first_loss_difference(a, copy.deepcopy(a)) is None


def test_render_groups_sections_in_order() -> None:
    diffs = [Difference("outputs", "tensor", "w", "changed", H1, H2),
             Difference("inputs", "data", "x.csv", "removed", H1, None)]
    lines = render(diffs)
    assert lines[0] == "inputs:" and lines[2] == "outputs:"
    assert lines[1].split() == ["data", "removed", "x.csv"]
    assert "111111111111… -> 222222222222…" in lines[3]


def test_flatten_keeps_lists_as_leaves_and_drops_empty_dicts() -> None:
    assert flatten({"a": {"b": [1, 2], "c": {}}, "d": 1}) == {"a.b": [1, 2], "d": 1}


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.lock", tmp_path / "b.lock"
    a.write_bytes(GOLDEN.read_bytes())
    b.write_bytes(GOLDEN.read_bytes())
    assert main(["diff", str(a), str(b)]) == 0
    assert "identical" in capsys.readouterr().out
    lock = golden()
    lock["inputs"]["data"]["files"][0]["hashes"]["sha256"] = H1
    b.write_text(json.dumps(lock))
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "inputs:\n  data         changed  data/train.csv" in out
    assert main(["diff", "--json", str(a), str(b)]) == 1
    report = json.loads(capsys.readouterr().out)["result"]
    assert report["version"] == 1 and report["result"] == "differ"
    assert [d["name"] for d in report["differences"]] == ["data/train.csv"]
    b.write_text("{")
    assert main(["diff", str(a), str(b)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.slow
def test_diff_never_imports_torch(tmp_path: Path) -> None:
    b = tmp_path / "b.lock"
    lock = golden()
    lock["build"]["threads"] = 1
    b.write_text(json.dumps(lock))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "repro", "diff", str(GOLDEN), str(b)],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "pin          changed  threads  2 -> 1" in proc.stdout
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    assert "repro.lock.lockdiff" in imported and not {m for m in imported if m == "torch" or m.startswith("torch.")}
