"""verify's downstream labels: which changed data files a dvc.yaml stage made from others."""

from __future__ import annotations

from pathlib import Path

from repro.lock.lockdiff import Difference
from repro.pipeline.dvc_lineage import Stage, explain_lineage, read_stages

PIPELINE = """
stages:
  tokenize:
    cmd: python tokenize_corpus.py
    deps: [tokenize_corpus.py, corpus/]
    params: [configs/tokenize/bpe.yaml: ]
    outs: [data/tokenizer.json, data/blocks.jsonl]
  train:
    cmd: repro train
    deps: [data/tokenizer.json, data/blocks.jsonl, configs]
    outs:
      - out/model.safetensors
      - out/repro.lock:
          cache: false
  sweep:
    foreach: [1, 2]
    do: {cmd: echo, outs: [data/tokenizer.json]}
  templated:
    cmd: echo
    deps: ["${item}"]
    outs: [data/blocks.jsonl]
"""


def _data(name: str) -> Difference:
    return Difference("inputs", "data", name, "changed", "a" * 64, "b" * 64)


def test_reads_plain_stages_and_skips_templated_ones(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(PIPELINE)
    assert read_stages(tmp_path) == [
        Stage("tokenize", ("tokenize_corpus.py", "corpus"), ("data/tokenizer.json", "data/blocks.jsonl")),
        Stage("train", ("data/tokenizer.json", "data/blocks.jsonl", "configs"),
              ("out/model.safetensors", "out/repro.lock")),
    ]
    assert read_stages(tmp_path / "nowhere") == []
    (tmp_path / "dvc.yaml").write_text("stages: [: not yaml")
    assert read_stages(tmp_path) == []


def test_outputs_of_a_stage_fed_by_a_changed_file_are_labelled_downstream(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(PIPELINE)
    diffs = [_data("corpus/persuasion.txt"), _data("data/blocks.jsonl"), _data("data/tokenizer.json"),
             Difference("inputs", "code", "tokenize_corpus.py", "changed")]
    out = explain_lineage(diffs, tmp_path)
    assert out[0] == diffs[0] and out[3] == diffs[3]
    for d in out[1:3]:
        assert d.detail == "downstream of corpus/persuasion.txt: output of dvc stage 'tokenize'"
        assert "downstream of corpus/persuasion.txt" in d.line()


def test_no_label_without_a_changed_upstream_file_or_a_pipeline(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(PIPELINE)
    alone = [_data("data/tokenizer.json"), _data("corpus-notes.txt")]  # not a dep of tokenize
    assert explain_lineage(alone, tmp_path) == alone
    pair = [_data("corpus/a.txt"), _data("data/tokenizer.json")]
    assert explain_lineage(pair, tmp_path / "elsewhere") == pair
