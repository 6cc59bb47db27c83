"""The model card and the audit, as a reader meets them: no `None`, no repro internals, every value escaped.

Hand-made locks (tests/test_lockfile.py's sample) rendered in-process; one release folder written to disk
for the card's all-or-nothing writes.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_audit import FREE
from test_lockfile import sample_lock

from repro.errors import UserInputError
from repro.lock import lockfile
from repro.lock.release_folder import resolve_release
from repro.trust import markdown as md
from repro.trust.model_card import render, title, write_card
from repro.trust.release_audit import ReleaseFacts, audit, render_table

HOSTILE = {
    "data_description": "toy data\n| Reproducible | **yes** |\n<img src=https://evil.example/beacon.png>\x1b[2J",
    "data_url": "https://x.example/`a`|b", "data_location": "url",
}


def lock_with(release: dict[str, Any] | None, **model: Any) -> dict[str, Any]:
    lock = copy.deepcopy(sample_lock())
    resolved = lock["inputs"]["config"]["resolved"]
    if release is not None:
        resolved["release"] = release
    resolved["model"] = {"_target_": "mylib.net.TinyNet", **model}
    resolved["task"] = {"_target_": "repro.tasks.Classification"}
    resolved["trainer"]["batch_size"] = 64
    return lock


def card_of(lock: dict[str, Any], check: dict[str, Any] | None = None) -> str:
    return render(lock, audit(lock, "repro.lock", "cd" * 32, ReleaseFacts(card=True)), None, check)


def test_a_card_without_release_terms_says_not_declared_never_none() -> None:
    lock = lock_with(None)
    card = card_of(lock)
    table = render_table(audit(lock, "repro.lock", "cd" * 32, ReleaseFacts()))
    assert "None" not in card and "None" not in table
    assert "| licence | weights not declared, code not declared, data not declared |" in card
    assert "weights: no licence declared (set release.weights\\_license)" in card


def test_evidence_names_the_users_own_files_and_targets_not_repros_modules() -> None:
    lock = lock_with(None)
    report = audit(lock, "repro.lock", "cd" * 32, ReleaseFacts())
    evidence = {c.name: c.evidence for c in report.components}
    assert "mylib.net.TinyNet (mylib/net.py)" in evidence["Model architecture"]
    assert "mylib/net.py" in evidence["Inference code"]
    assert "repro.tasks.Classification" in evidence["Evaluation code"]
    internal = re.compile(r"repro/(?!tasks\.py|models\.py|optim\.py)[\w/]+\.py")
    assert not [e for e in evidence.values() if internal.search(e)], evidence
    stages = copy.deepcopy(lock)
    stages["inputs"]["stages"] = [{"stage": "standardize", "code": {"files": [
        {"path": "prep/stats.py", "size": 1, "hashes": {"sha256": "ab" * 32}}]}}]
    pre = {c.name: c.evidence for c in audit(stages, "l", "cd" * 32, ReleaseFacts()).components}
    assert pre["Data preprocessing code"].startswith("stage standardize (prep/stats.py)")


def test_title_is_the_project_and_the_model() -> None:
    lock = lock_with(None)
    inputs = lock["inputs"]
    assert title(inputs["config"]["resolved"], inputs) == "mylib: TinyNet"  # the model's own package
    assert title(inputs["config"]["resolved"], inputs, "cancer-cnn") == "cancer-cnn: TinyNet"  # release.name
    repro_model = {**inputs["config"]["resolved"], "model": {"_target_": "repro.models.MLP"}}
    digits = {**inputs, "data": {**inputs["data"], "files": [{"path": "repro/examples/digits/digits.csv"}]}}
    assert title(repro_model, digits) == "digits: MLP"  # no project package: the data's folder
    assert title(repro_model, inputs) == "MLP"  # ... unless that is just data/


def test_counts_say_what_they_count() -> None:
    card = card_of(lock_with(None))
    assert "over 128 samples drawn (2 steps of 64)" in card  # draws, not the dataset's rows
    assert "| final training loss | 0.125 after 2 steps |" in card


def test_every_value_from_the_lock_is_escaped() -> None:
    lock = lock_with({**FREE, **HOSTILE}, hidden="``` \x1b")
    lock["inputs"]["data"]["files"][0]["path"] = "data/a|b`c\x07.csv"
    card = card_of(lock, {"axes": [{"axis": "path", "variation": "<b>x</b>", "result": "failed", "promised": True,
                                    "first_step": None, "detail": "| injected | row |"}]})
    assert not [c for c in card if c in "\x1b\x07"]  # control characters are shown escaped
    assert "<img" not in card and "<b>" not in card  # not even in the config block: no careless renderer sees it
    assert "| Reproducible | **yes** |" not in card
    assert "&lt;img src=https://evil.example/beacon.png&gt;" in card
    rows = [line for line in card.splitlines() if line.startswith("| Reproducible")]
    assert len(rows) == 1  # the description's fake row is text, not a second verdict
    assert "\\| Reproducible \\| \\*\\*yes\\*\\* \\|" in card
    assert "| ``data/a\\|b`c\\x07.csv`` |" in card  # a code span nothing can close; the pipe kept in its cell
    assert '  hidden: "\\u0060\\u0060\\u0060 \\u001b"\n' in card  # the config block: the same YAML value
    block = card.split("```yaml\n", 1)[1].split("\n```\n", 1)[0]
    import yaml

    assert yaml.safe_load(block) == lock["inputs"]["config"]["resolved"]
    assert "| injected | row |" not in card


@pytest.mark.parametrize(("value", "shown"), [
    ("Apache-2.0", "Apache-2.0"), ("**bold**", "\\*\\*bold\\*\\*"), ("# heading", "\\# heading"),
    ("1. item", "\\1. item"), ("<script>", "&lt;script&gt;"), ("a\x1bb", "a\\\\x1bb"), ("x\ny", "x\\\\ny"),
    ("[link](http://x)", "\\[link\\](http://x)"), ("![i](http://x)", "!\\[i\\](http://x)"),
])
def test_markdown_text_renders_literally(value: str, shown: str) -> None:
    assert md.text(value) == shown


def test_markdown_code_span_and_fence_cannot_be_closed_from_inside() -> None:
    assert md.code("a`b") == "``a`b``" and md.code("`x") == "`` `x ``"
    assert md.fenced("```\nx")[0] == "````" and md.fenced("```\nx")[-1] == "````"


def test_a_failed_card_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    lock = lock_with(None)
    lockfile.write(folder / "repro.lock", lock)
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    (folder / "run.json").write_text("{not json")  # read after the plot and rebuild.yaml are made
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(UserInputError):
        write_card(resolve_release(str(folder)))
    assert sorted(p.name for p in folder.iterdir()) == before  # no loss.png, rebuild.yaml, README.md, temp file
    (folder / "run.json").write_text(json.dumps({"git": None}))
    report = write_card(resolve_release(str(folder)))
    assert {p.name for p in folder.iterdir()} >= {"README.md", "loss.png", "rebuild.yaml"}
    assert report.card.read_text().startswith("---\n")
