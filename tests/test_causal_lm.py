"""The pieces the LM example adds, in-process and fast: the causal-LM task, data.sources, exports."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from repro.builder.outputs import write_exports
from repro.environment.pins import target_packages
from repro.errors import ConfigError, DataError
from repro.source.data import DataSpec, data_file_list, hashed_file_list
from repro.tasks import CausalLM


class Bigram(nn.Module):
    """logits for position t depend on token t only: an independent reference is easy."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)


def _rows(blocks: list[list[int]]):  # noqa: ANN202 - a datasets.Dataset
    import datasets

    return datasets.Dataset.from_dict({"ids": blocks})


def test_tensors_stack_blocks_and_reject_ragged_ones() -> None:
    t = CausalLM().tensors(_rows([[1, 2, 3], [4, 5, 6]]))
    assert t["ids"].dtype == torch.int64 and t["ids"].tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ConfigError, match="task.column 'ids'"):
        CausalLM().tensors(_rows([[1, 2, 3], [4, 5]]))
    with pytest.raises(ConfigError, match="task.column"):
        CausalLM(column="tokens").tensors(_rows([[1, 2]]))


def test_loss_and_evaluate_are_next_token_cross_entropy() -> None:
    model = Bigram(7)
    ids = torch.tensor([[1, 2, 3, 4], [6, 5, 4, 3], [0, 0, 1, 1]])
    # Reference: every (token t -> token t+1) pair, scored one at a time.
    pairs = [(int(r[i]), int(r[i + 1])) for r in ids for i in range(ids.shape[1] - 1)]
    ref = sum(-F.log_softmax(model.table.weight[a].double(), dim=0)[b].item() for a, b in pairs) / len(pairs)
    assert CausalLM().loss(model, {"ids": ids}).item() == pytest.approx(ref, rel=1e-6)
    metrics = CausalLM(eval_batch_size=2).evaluate(model, {"ids": ids})  # batches of 2 and 1
    assert metrics["loss"] == pytest.approx(ref, rel=1e-6)
    assert metrics["perplexity"] == pytest.approx(math.exp(ref), rel=1e-6)


def test_prompts_need_a_tokenizer_and_plain_models_export_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task.tokenizer"):
        CausalLM(prompts=["Once"])
    assert CausalLM().samples(Bigram(3), tmp_path) == []
    assert CausalLM().export(Bigram(3), tmp_path) == {}


def _spec(sources: list[str]) -> DataSpec:
    cfg = {"data": {"builder": "json", "data_files": ["data/blocks.jsonl"], "test_fraction": 0.1,
                    "split_seed": 1, "sources": sources}}
    return DataSpec.from_config(cfg)


def test_sources_are_hashed_with_data_files_but_not_loaded(tmp_path: Path) -> None:
    for rel in ("data/blocks.jsonl", "data/tokenizer.json", "corpus/b.txt", "corpus/a.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    spec = _spec(["corpus/*.txt", "data/tokenizer.json"])
    assert data_file_list(tmp_path, spec) == ["data/blocks.jsonl"]
    assert hashed_file_list(tmp_path, spec) == ["corpus/a.txt", "corpus/b.txt", "data/blocks.jsonl",
                                                "data/tokenizer.json"]
    with pytest.raises(DataError, match="corpus/missing.txt"):
        hashed_file_list(tmp_path, _spec(["corpus/missing.txt"]))
    with pytest.raises(ConfigError, match="data.sources"):
        _spec("corpus/a.txt")  # type: ignore[arg-type]


def test_target_packages_records_what_the_config_imports_from() -> None:
    cfg = {"model": {"_target_": "transformers.GPT2LMHeadModel", "config": {"_target_": "transformers.GPT2Config"}},
           "task": {"_target_": "repro.tasks.CausalLM"}, "trainer": {"optimizer": {"_target_": "torch.optim.AdamW"}}}
    assert target_packages(cfg) == ("transformers",)  # torch is always recorded, repro is code
    assert target_packages({"model": {"_target_": "repro.models.MLP"}}) == ()


def test_exports_with_reserved_or_nested_names_write_nothing(tmp_path: Path) -> None:
    for bad in ("repro.lock", "model.safetensors", "sub/config.json", ".hidden"):
        with pytest.raises(ConfigError, match="task export"):
            write_exports(tmp_path, {"config.json": b"{}\n", bad: b"x"})
        assert list(tmp_path.iterdir()) == []
    records = write_exports(tmp_path, {"b.json": b"2", "a.json": b"1"})
    assert [r["path"] for r in records] == ["a.json", "b.json"] and (tmp_path / "a.json").read_bytes() == b"1"
