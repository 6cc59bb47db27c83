"""Naming an edited config key from the lock's own digest, and the hints."""

from __future__ import annotations

import copy
from typing import Any

from repro.canonical import compact_json, sha256_bytes
from repro.lock.diff import Difference
from repro.lock.explain import explain_config_edit, hints, reference_configs

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


def test_reference_configs_include_the_embedded_one(tmp_path: Any) -> None:
    labels = [label for label, _ in reference_configs(tmp_path)]
    assert labels == ["repro's embedded train.yaml"]
    cfg = reference_configs(tmp_path)[0][1]
    assert "out_dir" not in cfg and cfg["trainer"]["max_steps"] == 300


LOCK = {"toolchain": {"repro": {"version": "0.2.0"}}}
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
    portable = hints(diffs, [], {**LOCK, "build": {"kernels": "portable"}})[0]  # the default profile's lock
    assert "diverges at step 5" in portable and "likely cause is this CPU" not in portable
    assert "an operation outside them" in portable
