"""Tasks turn rows into tensors and define the loss, so the loop stays generic.

A task is configured with `_target_` in the `task` group; the training loop never
asks which model or data it is running.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from repro.canonical import canonical_json
from repro.errors import ConfigError, DataError
from repro.records import JsonObject
from repro.safeio import loads, read_bytes
from repro.source.filetree import resolve_under, safe_relpath

Batch = dict[str, torch.Tensor]


class Task(Protocol):
    """What the training loop needs from a task."""

    def tensors(self, rows: Any) -> Batch:
        """All rows of a `datasets.Dataset` as tensors sharing their first dimension."""

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The scalar training loss on one batch."""

    def evaluate(self, model: nn.Module, data: Batch) -> dict[str, float]:
        """Held-out metrics; recorded in the lock, so they must be deterministic."""

    def samples(self, model: nn.Module, root: Path) -> list[str]:
        """Optional (TaskBase: none): deterministic text recorded in the lock, e.g. greedy completions."""

    def export(self, model: nn.Module, root: Path) -> dict[str, bytes]:
        """Optional (TaskBase: none): extra files for out_dir beside the weights, name -> bytes."""


REQUIRED_METHODS = ("tensors", "loss", "evaluate")
OPTIONAL_HOOKS = ("samples", "export")


class TaskBase:
    """The optional hooks' defaults: no samples, no exported files. Tasks subclass it."""

    def samples(self, model: nn.Module, root: Path) -> list[str]:
        return []

    def export(self, model: nn.Module, root: Path) -> dict[str, bytes]:
        return {}


class _Completed(TaskBase):
    """A task that defines only the required methods (it predates the hooks): the rest answer with nothing."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def tensors(self, rows: Any) -> Batch:
        out: Batch = self.task.tensors(rows)
        return out

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        out: torch.Tensor = self.task.loss(model, batch)
        return out

    def evaluate(self, model: nn.Module, data: Batch) -> dict[str, float]:
        out: dict[str, float] = self.task.evaluate(model, data)
        return out


def as_task(obj: Any) -> Task:
    """The object the `task` group built, as a Task; a missing required method is a config error.

    A task that defines neither optional hook gets TaskBase's; one that defines
    only one of them is refused, so a typo'd hook name cannot silently do nothing.
    """
    has = {name for name in (*REQUIRED_METHODS, *OPTIONAL_HOOKS) if callable(getattr(obj, name, None))}
    missing = [name for name in REQUIRED_METHODS if name not in has]
    hooks = [name for name in OPTIONAL_HOOKS if name in has]
    if missing or len(hooks) == 1:
        lacks = missing or [name for name in OPTIONAL_HOOKS if name not in has]
        raise ConfigError(f"config key task: {type(obj).__module__}.{type(obj).__qualname__} lacks "
                          f"{', '.join(lacks)}; a task defines {', '.join(REQUIRED_METHODS)} and may subclass "
                          "repro.tasks.TaskBase for the optional samples and export")
    task: Task = obj if hooks else _Completed(obj)
    return task


class Classification(TaskBase):
    """Cross-entropy over `label_column`; the remaining columns are features."""

    def __init__(self, label_column: str = "label", feature_scale: float = 1.0) -> None:
        self.label_column = label_column
        self.feature_scale = feature_scale

    def tensors(self, rows: Any) -> Batch:
        columns = list(rows.column_names)
        if self.label_column not in columns:
            raise ConfigError(f"task.label_column: {self.label_column!r} is not a column (have {columns[:8]}...)")
        # One Arrow table, one column at a time: datasets' numpy formatting copies a split
        # (an index mapping, one chunk per row) row by row, ~0.4 s for the digits example.
        table = rows.with_format("arrow")[:]
        features = [c for c in columns if c != self.label_column]
        x = np.stack([_numbers(table, c, np.float32) for c in features], axis=1)
        x *= np.float32(self.feature_scale)
        y = _numbers(table, self.label_column, np.int64)
        return {"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.from_numpy(y)}

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(model(batch["x"]), batch["y"])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Batch) -> dict[str, float]:
        logits = model(data["x"])
        loss = F.cross_entropy(logits, data["y"]).item()
        accuracy = (logits.argmax(dim=1) == data["y"]).double().mean().item()
        return {"accuracy": accuracy, "loss": loss}


def _numbers(table: Any, column: str, dtype: type[np.generic]) -> np.ndarray:
    """One number per row from a pyarrow `table`'s `column`, as `dtype`; anything else is a DataError."""
    import pyarrow as pa

    values = table.column(column)
    kind = values.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise DataError(f"data column {column!r}: expected a number per row, got {kind}")
    if values.null_count:
        raise DataError(f"data column {column!r}: {values.null_count} rows have no value")
    return np.asarray(values.to_numpy(), dtype=dtype)


class CausalLM(TaskBase):
    """Next-token cross-entropy over fixed-length blocks of token ids.

    Each row's `column` holds `block_size + 1` ids: the model reads the first
    `block_size` and is scored on predicting each following one. Works with any
    model whose output is logits or has `.logits` (HF causal LMs, a plain module).

    `tokenizer` (a `tokenizers` JSON file, relative to the project root) and
    `prompts` are optional: with both, `samples` greedy-decodes `sample_tokens`
    tokens after each prompt, and `export` puts the tokenizer beside the weights.
    The build hashes the tokenizer only if it is listed in `data.sources`.
    """

    def __init__(self, column: str = "ids", tokenizer: str | None = None, prompts: list[str] | None = None,
                 sample_tokens: int = 32, eval_batch_size: int = 64) -> None:
        if eval_batch_size < 1 or sample_tokens < 0:
            raise ConfigError("task.eval_batch_size must be >= 1 and task.sample_tokens >= 0")
        if tokenizer is not None:
            safe_relpath(tokenizer, "config key task.tokenizer")  # never a file outside the project
        if prompts and tokenizer is None:
            raise ConfigError("task.prompts needs task.tokenizer to encode them")
        self.column, self.tokenizer = column, tokenizer
        self.prompts = list(prompts or [])
        self.sample_tokens, self.eval_batch_size = sample_tokens, eval_batch_size

    def tensors(self, rows: Any) -> Batch:
        if self.column not in rows.column_names:
            raise ConfigError(f"task.column: {self.column!r} is not a column (have {list(rows.column_names)[:8]})")
        if len(rows) == 0:
            return {"ids": torch.zeros((0, 2), dtype=torch.int64)}
        blocks = rows.with_format("numpy")[self.column]
        lengths = {len(b) for b in blocks}
        if len(lengths) != 1 or min(lengths) < 2:
            raise ConfigError(f"task.column {self.column!r}: expected blocks of one length >= 2, got lengths "
                              f"{sorted(lengths)[:5]}; re-run the tokenize stage")
        return {"ids": torch.from_numpy(np.ascontiguousarray(np.stack(blocks).astype(np.int64)))}

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        ids = batch["ids"]
        logits = _logits(model(ids[:, :-1]))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Batch) -> dict[str, float]:
        """Mean held-out cross-entropy per token, summed in float64 over fixed batches."""
        ids, total = data["ids"], 0.0
        for start in range(0, ids.shape[0], self.eval_batch_size):
            chunk = ids[start : start + self.eval_batch_size]
            logits = _logits(model(chunk[:, :-1]))
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1),
                                     reduction="sum").double().item()
        loss = total / (ids.shape[0] * (ids.shape[1] - 1))
        return {"loss": loss, "perplexity": math.exp(loss)}

    @torch.no_grad()
    def samples(self, model: nn.Module, root: Path) -> list[str]:
        """Greedy continuations of `prompts`: deterministic, so the lock records them.

        One full forward per new token (no KV cache); like `generate(do_sample=False)`
        it stops after the model's `eos_token_id`, and special tokens are kept in
        the text. The context is cut to the model's window.
        """
        if not self.prompts or self.tokenizer is None:
            return []
        tok = _load_tokenizer(root, self.tokenizer)
        window = _context_window(model)
        eos = getattr(getattr(model, "config", None), "eos_token_id", None)
        out = []
        for prompt in self.prompts:
            ids = torch.tensor([tok.encode(prompt).ids], dtype=torch.int64)
            for _ in range(self.sample_tokens):
                nxt = _logits(model(ids[:, -window:]))[:, -1].argmax(dim=-1, keepdim=True)
                ids = torch.cat([ids, nxt], dim=1)
                if eos is not None and int(nxt) == eos:
                    break
            out.append(tok.decode(ids[0].tolist(), skip_special_tokens=False))
        return out

    def export(self, model: nn.Module, root: Path) -> dict[str, bytes]:
        """Files that make the output folder loadable by `transformers.from_pretrained`.

        `config.json` is the model's HF config, written canonically; the tokenizer
        file is copied byte for byte with a `tokenizer_config.json` naming it.
        Models without an HF config export nothing.
        """
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "to_dict"):
            return {}
        cfg = config.to_dict()
        cfg["architectures"] = [type(model).__name__]
        files = {"config.json": canonical_json(cfg)}
        if self.tokenizer is not None:
            raw = _tokenizer_bytes(root, self.tokenizer)
            files["tokenizer.json"] = raw
            files["tokenizer_config.json"] = canonical_json(_tokenizer_config(raw, cfg))
        return files


def _logits(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


def _context_window(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    window = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return int(window) if window else 1 << 30


def _tokenizer_bytes(root: Path, rel: str) -> bytes:
    """The tokenizer file's bytes: under the project root (links included), regular, size-capped."""
    path = resolve_under(root, rel, "config key task.tokenizer")
    if not path.is_file():
        raise DataError(f"task.tokenizer: {rel}: file not found under the project root; run the tokenize stage")
    return read_bytes(path, "tokenizer file", error=DataError, follow_links=True)


def _load_tokenizer(root: Path, rel: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_tokenizer_bytes(root, rel).decode("utf-8"))


def _tokenizer_config(raw: bytes, model_cfg: dict[str, Any]) -> JsonObject:
    """What `AutoTokenizer.from_pretrained` needs besides tokenizer.json: the class and special tokens."""
    added = loads(raw, "tokenizer file", DataError).get("added_tokens", [])
    by_id = {t["id"]: t["content"] for t in added}
    special = {k: by_id[model_cfg[f"{k}_id"]] for k in ("bos_token", "eos_token")
               if isinstance(model_cfg.get(f"{k}_id"), int) and model_cfg[f"{k}_id"] in by_id}
    return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": _max_len(model_cfg), **special}


def _max_len(model_cfg: dict[str, Any]) -> int:
    return int(model_cfg.get("n_positions") or model_cfg.get("max_position_embeddings") or 1 << 30)
