"""Which changed data files lie downstream of which, read from the project's dvc.yaml. No torch.

verify names every data file that differs from the lock. When a raw file changed
and a pipeline stage rebuilt its outputs (a corpus, then its tokenizer), the
outputs differ too; naming the stage that connects them turns several
mismatches into one cause. Only what dvc.yaml states plainly is used: stages
with `foreach`/`matrix` or `${...}` templating are skipped rather than guessed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.errors import UserInputError
from repro.filenames import DVC_YAML_NAME
from repro.lock.lockdiff import Difference
from repro.source.config_guard import load_yaml


@dataclass(frozen=True)
class Stage:
    name: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]


def read_stages(root: Path) -> list[Stage]:
    """The plainly written stages of `root/dvc.yaml`; none if it is absent or unreadable."""
    try:  # bounded (repro.source.config_guard): a FIFO, a /dev/zero link or an alias bomb is skipped
        doc = load_yaml(root / DVC_YAML_NAME, DVC_YAML_NAME)
    except UserInputError:
        return []
    stages = doc.get("stages") if isinstance(doc, dict) else None
    if not isinstance(stages, dict):
        return []
    out = []
    for name, st in stages.items():
        if not isinstance(st, dict) or "foreach" in st or "matrix" in st:
            continue
        deps, outs = _paths(st.get("deps")), _paths(st.get("outs"))
        if not any("${" in p for p in deps + outs):
            out.append(Stage(str(name), deps, outs))
    return out


def _paths(entries: Any) -> tuple[str, ...]:
    """dvc.yaml lists paths as strings or as one-key mappings (`- out/x: {cache: false}`)."""
    paths = []
    for e in entries if isinstance(entries, list) else []:
        key = next(iter(e), None) if isinstance(e, dict) else e
        if isinstance(key, str):
            paths.append(key.rstrip("/"))
    return tuple(paths)


def _covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep + "/")


def explain_lineage(diffs: list[Difference], root: Path) -> list[Difference]:
    """Mark each changed data file that a dvc.yaml stage makes from another changed file."""
    changed = [d.name for d in diffs if d.section == "inputs" and d.kind == "data"]
    if len(changed) < 2:
        return diffs
    upstream: dict[str, str] = {}
    for stage in read_stages(root):
        for path in changed:
            if any(_covers(o, path) for o in stage.outs):
                causes = [c for c in changed if c != path and any(_covers(dep, c) for dep in stage.deps)]
                if causes:
                    upstream[path] = f"downstream of {', '.join(causes)}: output of dvc stage {stage.name!r}"
    return [dataclasses.replace(d, detail="; ".join(filter(None, [d.detail, upstream[d.name]])))
            if d.section == "inputs" and d.kind == "data" and d.name in upstream else d for d in diffs]
