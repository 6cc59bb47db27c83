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


def test_classification_reads_a_shuffled_split_as_the_numpy_formatter_does() -> None:
    """The Arrow path gives the bytes datasets' own numpy formatting gave, on an index-mapped split."""
    import datasets
    import numpy as np

    rows = {f"p{i}": [float(i * r % 17) for r in range(50)] for i in range(5)}
    rows["label"] = [r % 3 for r in range(50)]
    split = datasets.Dataset.from_dict(rows).train_test_split(test_size=0.3, seed=1, shuffle=True)["train"]
    batch = Classification(feature_scale=0.5).tensors(split)
    table = split.with_format("numpy")[:]
    x = np.stack([np.asarray(table[f"p{i}"], dtype=np.float32) for i in range(5)], axis=1) * np.float32(0.5)
    assert batch["x"].numpy().tobytes() == np.ascontiguousarray(x).tobytes()
    assert batch["y"].numpy().tobytes() == np.asarray(table["label"], dtype=np.int64).tobytes()


@pytest.mark.parametrize(("column", "says"), [([1.0, None, 2.0], "'p0': 1 rows have no value"),
                                              (["a", "b", "c"], "'p0': expected a number per row, got string"),
                                              ([[1.0], [2.0], [3.0]], "'p0': expected a number per row, got list")])
def test_classification_names_a_column_that_is_not_one_number_per_row(column: list[Any], says: str) -> None:
    import datasets

    from repro.errors import DataError

    with pytest.raises(DataError, match=says):
        Classification().tensors(datasets.Dataset.from_dict({"p0": column, "label": [0, 1, 0]}))
