"""The Task protocol: required methods checked when the task is built, optional hooks declared with defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torch import nn

from repro.errors import ConfigError
from repro.tasks import Classification, TaskBase, as_task


class _Bare:
    """A task written before the optional hooks existed: only the required methods."""

    def tensors(self, rows: Any) -> Any:
        return rows

    def loss(self, model: Any, batch: Any) -> Any:
        return 0.0

    def evaluate(self, model: Any, data: Any) -> dict[str, float]:
        return {"score": 1.0}


def test_repro_tasks_have_the_hooks_and_are_used_as_they_are() -> None:
    task = Classification()
    assert as_task(task) is task
    assert task.samples(nn.Linear(1, 1), Path(".")) == [] and task.export(nn.Linear(1, 1), Path(".")) == {}


def test_a_task_without_hooks_gets_the_defaults_and_keeps_its_methods() -> None:
    task = as_task(_Bare())
    assert isinstance(task, TaskBase)
    assert task.evaluate(None, None) == {"score": 1.0}  # type: ignore[arg-type]
    assert task.samples(nn.Linear(1, 1), Path(".")) == [] and task.export(nn.Linear(1, 1), Path(".")) == {}


def test_a_missing_required_method_or_a_lone_hook_is_a_config_error() -> None:
    class NoLoss:
        def tensors(self, rows: Any) -> Any: ...
        def evaluate(self, model: Any, data: Any) -> Any: ...

    with pytest.raises(ConfigError, match="lacks loss"):
        as_task(NoLoss())

    class OneHook(_Bare):
        def samples(self, model: Any, root: Path) -> list[str]:
            return []

    with pytest.raises(ConfigError, match="lacks export"):
        as_task(OneHook())
