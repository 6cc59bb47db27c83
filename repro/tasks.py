"""Tasks turn rows into tensors and define the loss, so the loop stays generic.

A task is configured with `_target_` in the `task` group; the training loop never
asks which model or data it is running.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from repro.errors import ConfigError

Batch = dict[str, torch.Tensor]


class Task(Protocol):
    """What the training loop needs from a task."""

    def tensors(self, rows: Any) -> Batch:
        """All rows of a `datasets.Dataset` as tensors sharing their first dimension."""

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The scalar training loss on one batch."""

    def evaluate(self, model: nn.Module, data: Batch) -> dict[str, float]:
        """Held-out metrics; recorded in the lock, so they must be deterministic."""


class Classification:
    """Cross-entropy over `label_column`; the remaining columns are features."""

    def __init__(self, label_column: str = "label", feature_scale: float = 1.0) -> None:
        self.label_column = label_column
        self.feature_scale = feature_scale

    def tensors(self, rows: Any) -> Batch:
        columns = list(rows.column_names)
        if self.label_column not in columns:
            raise ConfigError(f"task.label_column: {self.label_column!r} is not a column (have {columns[:8]}...)")
        table = rows.with_format("numpy")[:]
        features = [c for c in columns if c != self.label_column]
        x = np.stack([np.asarray(table[c], dtype=np.float32) for c in features], axis=1)
        x *= np.float32(self.feature_scale)
        y = np.asarray(table[self.label_column], dtype=np.int64)
        return {"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.from_numpy(y)}

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(model(batch["x"]), batch["y"])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Batch) -> dict[str, float]:
        logits = model(data["x"])
        loss = F.cross_entropy(logits, data["y"]).item()
        accuracy = (logits.argmax(dim=1) == data["y"]).double().mean().item()
        return {"accuracy": accuracy, "loss": loss}
