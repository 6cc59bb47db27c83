"""The schema of repro's own config: which keys the top level and repro's groups may hold. No torch.

Hydra refuses `trainer.max_step=7` on the command line, because the key does not
exist; in a config file it would merge silently, and the build would train with
repro's default while the lock recorded the typo. So after composing, every key
of the top level and of repro's own groups is checked here, and an unknown one
is refused (exit 2) naming the file that holds it, the key, and the nearest
valid key.

- `build`'s keys are the pins (`repro.environment.pins`), `data`'s the fields of
  `DataSpec`, a stage's `repro.source.stages.KEYS`: one list each, kept where the
  values are read.
- `model` and `task` (and the optimizer and scheduler) are `_target_` nodes: their
  keys are the constructor's keyword arguments, checked against its signature in
  the build process before training starts (`repro.train.targets`).
- Other top-level keys are the project's own namespaces (`tokenize:`, `prepare:`,
  read by interpolations such as `${tokenize.vocab_size}`): a mapping whose name
  is not a near miss of one of repro's keys (`traner:` is refused, naming
  `trainer`), or any key that an interpolation reads. DVC's Hydra composition
  writes params.yaml with the interpolations resolved, so use alone cannot be
  the test.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from repro.environment.pins import BUILD_KEYS
from repro.errors import ConfigError
from repro.source.composed import ComposedFile, defined_in

# Keys repro itself reads at the top level. `model` and `task` are `_target_` nodes.
TOP_LEVEL = ("seed", "out_dir", "code", "data", "model", "task", "trainer", "build", "release", "stages")
# The training loop's keys (repro.source.config.TrainerSpec and CheckpointSpec, the optimizer
# and scheduler nodes); the values' types are checked by repro.source.config.VALUE_TYPES.
TRAINER_KEYS = ("max_steps", "batch_size", "lr", "shuffle", "log_every", "num_workers", "optimizer", "scheduler",
                "checkpoint_every", "keep_checkpoints")
CODE_KEYS = ("include",)
NEAR_MISS = 0.8  # difflib ratio above which an unknown top-level mapping is a typo of one of repro's keys
_INTERPOLATION = re.compile(r"\$\{\s*([A-Za-z_][\w\-]*)")


def build_keys() -> tuple[str, ...]:
    """The `build` group: one key per pin (the seed is the top-level `seed`)."""
    return BUILD_KEYS


def data_keys() -> tuple[str, ...]:
    from repro.source.data import DataSpec

    return tuple(f.name for f in fields(DataSpec))


def group_keys() -> dict[str, tuple[str, ...]]:
    """repro's groups with a closed set of keys."""
    return {"trainer": TRAINER_KEYS, "build": build_keys(), "data": data_keys(), "code": CODE_KEYS}


def referenced_roots(raw: Any) -> set[str]:
    """The top-level names that interpolations in the unresolved config read (`${tokenize.x}` -> tokenize)."""
    found: set[str] = set()
    for text in _strings(raw):
        found.update(m.group(1) for m in _INTERPOLATION.finditer(text))
    return found


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def unknown_keys(cfg: dict[str, Any], namespaces: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(dotted key, the keys valid in its place) for every key the schema does not know."""
    out: list[tuple[str, tuple[str, ...]]] = []
    top = (*TOP_LEVEL, *sorted(namespaces))
    out += [(str(k), TOP_LEVEL) for k, v in cfg.items() if k not in top and not _namespace(str(k), v)]
    for group, keys in group_keys().items():
        node = cfg.get(group)
        if isinstance(node, dict):
            out += [(f"{group}.{k}", tuple(f"{group}.{v}" for v in keys)) for k in node if k not in keys]
    stages = cfg.get("stages")
    if isinstance(stages, dict):
        from repro.source.stages import KEYS

        for name, node in stages.items():
            if isinstance(node, dict):
                out += [(f"stages.{name}.{k}", tuple(f"stages.{name}.{v}" for v in KEYS)) for k in node
                        if k not in KEYS]
    return out


def _namespace(key: str, value: Any) -> bool:
    """A project's own top-level mapping (`prepare:`), as opposed to a misspelt group (`traner:`)."""
    return isinstance(value, dict) and not difflib.get_close_matches(key, TOP_LEVEL, n=1, cutoff=NEAR_MISS)


def check(cfg: dict[str, Any], raw: Any, files: Callable[[], list[ComposedFile]], root: Path) -> None:
    """Raise ConfigError for the first unknown key, naming its file, the key and the nearest valid key.

    `raw` is the unresolved config (for the names interpolations read); `files`
    computes the composed files, only when there is something to name.
    """
    problems = unknown_keys(cfg, referenced_roots(raw))
    if not problems:
        return
    composed = files()
    groups = {f.package.split(".", 1)[0] for f in composed if f.package}
    problems = [(k, valid) for k, valid in problems if "." in k or k not in groups]
    if not problems:
        return
    key, valid = problems[0]
    where = defined_in(key, composed, root)
    raise ConfigError(f"{where}: unknown key {key}{suggestion(key, valid)}")


def suggestion(key: str, valid: tuple[str, ...]) -> str:
    """`; did you mean trainer.max_steps?`, or the valid keys when none is close."""
    parent, _, leaf = key.rpartition(".")
    leaves = {v.rpartition(".")[2]: v for v in valid}
    close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.7)
    if close:
        return f"; did you mean {leaves[close[0]]}?"
    return f" (valid keys{' of ' + parent if parent else ''}: {', '.join(leaves)})"
