"""Stages: Python callables declared under `stages.<name>` in the Hydra config. No torch.

A stage turns files into files, the way a compiler pass turns source into an
object file:

    stages:
      tokenize:
        _target_: tokenize_corpus.tokenize      # module.function, importable from the project root
        params: {vocab_size: 4096}              # keyword arguments
        inputs: [corpus/*.txt]                  # files, folders or globs under the root
        outputs: [data/tokenizer.json, data/blocks.jsonl]
        code: []                                # optional: files hashed as code but never imported
        record: data/tokenize.stage.json        # optional: where the stage record goes

`repro run NAME` calls `target(inputs=[Path...], outputs=[Path...], **params)`;
see `repro.builder.stage`. This module only reads declarations and orders them:
which stage makes which path, and which stages lie upstream of a set of files.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from repro.errors import ConfigError
from repro.records import JsonObject, StageDeclaration
from repro.source.filetree import safe_relpath

KEYS = ("_target_", "params", "inputs", "outputs", "code", "record")
RECORD_SUFFIX = ".stage.json"


@dataclass(frozen=True)
class StageSpec:
    """One declared stage, checked: every path relative, outputs distinct."""

    name: str
    target: str
    params: JsonObject
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    code: tuple[str, ...]
    record: str

    @classmethod
    def from_config(cls, name: str, node: Any) -> StageSpec:
        where = f"config key stages.{name}"
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: expected a mapping with _target_, params, inputs and outputs")
        unknown = sorted(set(node) - set(KEYS))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key (expected one of {list(KEYS)})")
        target = node.get("_target_")
        if not isinstance(target, str) or "." not in target:
            raise ConfigError(f"{where}._target_: expected module.function, got {target!r}")
        params = node.get("params") or {}
        if not isinstance(params, dict) or {"inputs", "outputs"} & set(params):
            raise ConfigError(f"{where}.params: expected a mapping of keyword arguments (not inputs/outputs)")
        outputs = _paths(node.get("outputs"), f"{where}.outputs", globs=False)
        if not outputs:
            raise ConfigError(f"{where}.outputs: expected at least one output path")
        if len(set(outputs)) != len(outputs):
            raise ConfigError(f"{where}.outputs: a path is listed twice")
        record = node.get("record") or default_record(name, outputs[0])
        safe_relpath(str(record), f"{where}.record")
        if record in outputs:
            raise ConfigError(f"{where}.record: {record} is also an output")
        return cls(name=name, target=target, params=dict(params),
                   inputs=_paths(node.get("inputs"), f"{where}.inputs", globs=True),
                   outputs=outputs, code=_paths(node.get("code"), f"{where}.code", globs=True), record=str(record))

    def declaration(self) -> StageDeclaration:
        """What a stage record stores so that the stage can be run again from it alone."""
        return {"target": self.target, "params": self.params, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "code": list(self.code)}

    @classmethod
    def from_declaration(cls, name: str, declared: StageDeclaration, record: str) -> StageSpec:
        return cls.from_config(name, {"_target_": declared["target"], "params": declared["params"],
                                      "inputs": declared["inputs"], "outputs": declared["outputs"],
                                      "code": declared["code"], "record": record})

    def makes(self, path: str) -> bool:
        return path in self.outputs

    def reads(self, path: str) -> bool:
        """Does one of this stage's input patterns cover `path` (a file, a folder above it, a glob)?"""
        return any(covers(pattern, path) for pattern in self.inputs)


def default_record(name: str, first_output: str) -> str:
    parent = PurePosixPath(first_output).parent
    return str(parent / f"{name}{RECORD_SUFFIX}") if str(parent) != "." else f"{name}{RECORD_SUFFIX}"


def covers(pattern: str, path: str) -> bool:
    pattern = pattern.rstrip("/")
    return path == pattern or path.startswith(pattern + "/") or fnmatch.fnmatchcase(path, pattern)


def _paths(value: Any, where: str, globs: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected a list of paths under the project root, got {value!r}")
    for v in value:
        safe_relpath(v, where)
        if not globs and any(c in v for c in "*?["):
            raise ConfigError(f"{where}: {v!r} is a glob; outputs must be plain file paths")
    return tuple(value)


def stage_specs(resolved: Mapping[str, object]) -> dict[str, StageSpec]:
    """Every declared stage, in run order (a stage after those whose outputs it reads)."""
    section = resolved.get("stages") or {}
    if not isinstance(section, dict):
        raise ConfigError("config key stages: expected a mapping of stage name to declaration")
    specs = {str(name): StageSpec.from_config(str(name), node) for name, node in section.items()}
    made: dict[str, str] = {}
    for spec in specs.values():
        for path in (*spec.outputs, spec.record):
            if path in made:
                raise ConfigError(f"config key stages.{spec.name}.outputs: {path} is also written by stage "
                                  f"{made[path]}")
            made[path] = spec.name
    return {name: specs[name] for name in _run_order(specs)}


def _run_order(specs: dict[str, StageSpec]) -> list[str]:
    needs = {s.name: {o.name for o in specs.values() if o is not s and any(s.reads(p) for p in o.outputs)}
             for s in specs.values()}
    order: list[str] = []
    while len(order) < len(specs):
        ready = [n for n in specs if n not in order and needs[n] <= set(order)]
        if not ready:
            stuck = sorted(n for n in specs if n not in order)
            raise ConfigError(f"config key stages: {', '.join(stuck)} read each other's outputs (a cycle)")
        order.append(ready[0])
    return order


def producer(specs: dict[str, StageSpec], path: str) -> StageSpec | None:
    """The stage that writes `path` (an output), if any."""
    return next((s for s in specs.values() if s.makes(path)), None)
