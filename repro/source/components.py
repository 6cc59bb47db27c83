"""The `_target_` nodes a build instantiates, read from the resolved config once.

They stay plain config nodes (Hydra instantiates them in the build child, after the
trust gate has judged what they resolve to); this value only says which nodes a
build has, so the training loop never indexes the config itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from repro.errors import ConfigError
from repro.source.config import require

Node = dict[str, Any]  # a `_target_` node: arbitrary JSON below its `_target_`


@dataclass(frozen=True)
class Components:
    """The task, model, optimizer and (optional) scheduler nodes of one build."""

    task: Node
    model: Node
    optimizer: Node
    scheduler: Node | None = None  # a project's own trainer group may predate the key

    @classmethod
    def from_config(cls, cfg: Node) -> Components:
        nodes = {"task": require(cfg, "task", dict), "model": require(cfg, "model", dict),
                 "trainer.optimizer": require(cfg, "trainer.optimizer", dict)}
        scheduler = require(cfg, "trainer", dict).get("scheduler")
        if scheduler is not None:
            nodes["trainer.scheduler"] = scheduler
        for key, node in nodes.items():
            if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
                raise ConfigError(f"config key {key}: expected a mapping with _target_")
        return cls(nodes["task"], nodes["model"], nodes["trainer.optimizer"], scheduler)
