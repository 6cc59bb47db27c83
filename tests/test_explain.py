"""Naming an edited config key from the lock's own digest, and the hints."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from repro.canonical import compact_json, sha256_bytes
from repro.lock.explain import explain_config_edit, hints, reference_configs
from repro.lock.lockdiff import Difference

BUILT: dict[str, Any] = {"seed": 0, "trainer": {"lr": 0.01, "max_steps": 20, "batch_size": 64},
                         "model": {"hidden": 64}, "data": {"data_files": ["a.csv"]}}
# The project's config before the build's overrides (max_steps was overridden to 20).
PROJECT: dict[str, Any] = {**copy.deepcopy(BUILT), "trainer": {"lr": 0.01, "max_steps": 300, "batch_size": 64}}
SHA = sha256_bytes(compact_json(BUILT))


def test_one_edit_is_found_with_its_old_value() -> None:
    edited = copy.deepcopy(BUILT)
    edited["trainer"]["lr"] = 0.02
    found = explain_config_edit(edited, SHA, [("project", PROJECT)])
    assert found is not None
    assert [(d.name, d.change, d.old, d.new) for d in found] == [("trainer.lr", "changed", 0.01, 0.02)]


def test_two_edits_and_an_added_key() -> None:
    edited = copy.deepcopy(BUILT)
    edited["model"]["hidden"] = 128
    edited["model"]["dropout"] = 0.1
    found = explain_config_edit(edited, SHA, [("project", PROJECT)])
    assert found is not None
    assert sorted((d.name, d.change, d.old, d.new) for d in found) == [
        ("model.dropout", "added", None, 0.1), ("model.hidden", "changed", 64, 128)]


def test_an_edit_no_reference_can_explain_returns_none() -> None:
    edited = copy.deepcopy(BUILT)
    edited["trainer"]["max_steps"] = 300  # now equals the project's value: not a suspect any more
    assert explain_config_edit(edited, SHA, [("project", PROJECT)]) is None
    # A digest that no candidate reproduces (say, a forged one) is not explained either.
    assert explain_config_edit(BUILT, "00" * 32, [("project", PROJECT)]) is None


def test_a_group_replaced_by_a_scalar_is_explained_not_crashed_on() -> None:
    """A hostile lock's `model: null` (found by tests/hostile/test_hostile_fuzz.py) is an edit like any other."""
    edited = {**copy.deepcopy(BUILT), "model": None}
    found = explain_config_edit(edited, SHA, [("project", PROJECT)])
    assert found is not None and [(d.name, d.change) for d in found] == [("model.hidden", "removed")]


def test_reference_configs_include_the_embedded_one(tmp_path: Any) -> None:
    labels = [label for label, _ in reference_configs(tmp_path)]
    assert labels == ["repro's embedded train.yaml"]
    cfg = reference_configs(tmp_path)[0][1]
    assert "out_dir" not in cfg and cfg["trainer"]["max_steps"] == 300


LOCK = {"toolchain": {"repro": {"version": "0.2.0"}}, "build": {"profile": "default"}}
COMMIT = "c0ffee" * 6 + "abcd"


def test_hints_name_the_culprit_first() -> None:
    diffs = [Difference("inputs", "data", "d.csv", "changed"), Difference("outputs", "tensor", "w", "changed")]
    out = hints(diffs, [], LOCK)
    assert len(out) == 1 and out[0].startswith("the data differs (d.csv)")
    code = hints([Difference("inputs", "code", "configs/x.yaml", "changed")], [], LOCK, COMMIT)
    assert "check out commit c0ffeec0ffee" in code[0]
    assert "restore the files the lock names" in hints([Difference("inputs", "code", "x", "changed")], [], LOCK)[0]


def test_hints_for_outputs_alone_blame_packages_or_the_cpu() -> None:
    diffs = [Difference("outputs", "tensor", "w", "changed"), Difference("outputs", "loss", "step 5", "changed")]
    drift = [Difference("toolchain", "distribution", "torch", "changed", "2.13.0", "2.14.1")]
    assert "the toolchain differs (torch)" in hints(diffs, drift, LOCK)[0]
    assert "--toolchain recreate" in hints(diffs, drift, LOCK)[0]
    cpu = hints(diffs, [], LOCK)[0]
    assert "diverges at step 5" in cpu and "likely cause is this CPU" in cpu and "build=default" in cpu


STEP_7 = Difference("outputs", "step", "step 7", "changed", stats={"first_step": 7})
RESUMED = {**LOCK, "build": {"profile": "default", "resumes": [
    {"step": 3, "source": {}, "differs": []},
    {"step": 10, "source": {}, "differs": [{"kind": "code", "name": "p/blocks.py", "change": "changed"}]}]}}


@pytest.mark.parametrize(("lock", "built_here", "first", "says"), [
    (RESUMED, None, STEP_7, "resumed at step 10 from a checkpoint made from another source (code p/blocks.py)"),
    (RESUMED, True, STEP_7, "Not a CPU difference: retrain it from step 0 with `repro train --no-resume`"),
    (LOCK, True, STEP_7, "this is the machine that built the lock (its run.json names this host and CPU model), "
                         "yet training diverges at step 7: not the CPU"),
    (LOCK, True, dataclasses.replace(STEP_7, name="step 0", stats={"first_step": 0}),
     "the initial parameters already differ (step 0): building the model depends on something the lock does not"),
    ({**LOCK, "build": {"profile": "default", "kernels": "portable"}}, False, STEP_7,
     "repro's portable kernels (build=default), whose operations give the same bits on every x86-64 CPU"),
    (LOCK, False, STEP_7, "diverges at step 7: the likely cause is this CPU"),
])
def test_the_cpu_is_named_only_after_the_resume_record_this_machine_and_the_profile(
        lock: dict, built_here: bool | None, first: Difference, says: str) -> None:
    out = hints([Difference("outputs", "tensor", "w", "changed"), first], [], lock, built_here=built_here)
    assert len(out) == 1 and says in out[0]
    if built_here or lock is RESUMED:
        assert "this CPU" not in out[0] and "likely cause is" not in out[0]
