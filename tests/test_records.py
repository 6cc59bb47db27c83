"""The record types mirror their schemas: stage records, checkpoint state and run.json.

As tests/test_lockfile.py does for the lock: every object of each schema has a
TypedDict with the same required and optional keys, so code that names a key the
schema lacks (or forgets one it requires) is a type error. run.json is also
written by the real writer and validated against its schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import torch
from test_lockfile import sample_lock

from repro import records as r
from repro.builder.outputs import write_outputs
from repro.lock import identity, stagerecord
from repro.records import CheckpointReport
from repro.train import checkpoint as c

RUN_SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "run.schema.json"


def _node(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    """The schema object at `path`: property names, "[]" for array items, "$NAME" for a $defs entry."""
    n = schema
    for part in path:
        n = n["$defs"][part[1:]] if part.startswith("$") else n["items"] if part == "[]" else n["properties"][part]
        while "$ref" in n:  # "#/$defs/NAME"
            n = schema["$defs"][n["$ref"].rsplit("/", 1)[1]]
    return n


def _mirrors(obj: dict[str, Any], typed: Any, *, open_required: frozenset[str] = frozenset(),
             open_optional: frozenset[str] = frozenset()) -> None:
    """`typed` has `obj`'s required keys as required and its other properties as optional.

    `open_*`: keys the type names that an open object of the schema (no `properties`,
    or no `additionalProperties: false`) leaves to the writer.
    """
    required = set(obj.get("required", []))
    optional = set(obj.get("properties", {})) - required
    if open_required or open_optional:
        assert obj.get("additionalProperties") is not False, typed.__name__
    assert set(typed.__required_keys__) == required | open_required, typed.__name__
    assert set(typed.__optional_keys__) == optional | open_optional, typed.__name__


def test_the_stage_record_types_mirror_the_schema() -> None:
    s = stagerecord.schema()
    pairs = [((), r.StageRecord), (("declared",), r.StageDeclaration), (("pins",), r.StagePins),
             (("toolchain",), r.StageToolchain), (("toolchain", "repro"), r.Compiler), (("inputs",), r.FilesBlock),
             (("code",), r.FilesBlock), (("outputs",), r.FilesBlock), (("$file",), r.FileRecord),
             (("$file", "hashes"), r.Hashes), (("$files_block",), r.FilesBlock)]
    for path, typed in pairs:
        _mirrors(_node(s, *path), typed)


def test_the_checkpoint_types_mirror_the_schema() -> None:
    s = c.schema()
    pins = frozenset(r.PinRecord.__required_keys__)
    _mirrors(_node(s, "$manifest"), c.Manifest)
    _mirrors(_node(s, "$manifest", "files", "[]"), r.FileRecord)
    _mirrors(_node(s, "$manifest", "files", "[]", "hashes"), r.Hashes)
    _mirrors(_node(s, "$state"), c.CheckpointState)
    for path, typed in [(("sample_order",), c.OrderPosition), (("rng",), c.RngState), (("rng", "python"), c.PythonRng),
                        (("rng", "numpy"), c.NumpyRng), (("resumes", "[]"), identity.Boundary)]:
        _mirrors(_node(s, "$state", *path), typed)
    # state.inputs is the lock's Inputs; the schema checks its three required blocks and leaves the rest open.
    _mirrors(_node(s, "$state", "inputs"), r.Inputs, open_optional=frozenset({"stages", "base"}))
    for block, typed in [("config", r.ConfigBlock), ("data", r.DataBlock), ("code", r.FilesBlock)]:
        extra = frozenset(r.DataBlock.__optional_keys__) if typed is r.DataBlock else frozenset()
        _mirrors(_node(s, "$state", "inputs", block), typed, open_optional=extra)
    _mirrors(_node(s, "$state", "build"), c.CheckpointBuild, open_required=pins)  # every pin, then packages
    _mirrors(_node(s, "$identity"), identity.Identity)
    _mirrors(_node(s, "$identity", "toolchain"), r.Toolchain)
    _mirrors(_node(s, "$files"), r.FilesBlock)


def test_the_run_record_types_mirror_the_schema() -> None:
    s = json.loads(RUN_SCHEMA.read_text(encoding="utf-8"))
    for path, typed in [((), r.RunRecord), (("git",), r.GitState), (("checkpoints",), r.CheckpointCounts),
                        (("resumed_from",), r.ResumedFrom), (("resumes", "[]"), r.RunResume),
                        (("resumes", "[]", "source"), r.ResumeSource)]:
        _mirrors(_node(s, *path), typed)


@pytest.mark.parametrize("resumed", [False, True])
def test_a_written_run_json_matches_its_schema(tmp_path: Path, resumed: bool) -> None:
    """The writer's run.json, with and without a resume, validates against docs/run.schema.json."""
    lock = sample_lock()
    result = SimpleNamespace(exports={}, state={"w": torch.zeros(2, 3)}, losses=[0.5, 0.125], metrics={"accuracy": 0.5},
                             step_digests=["0" * 32] * 3, samples=[], dataset_fingerprint="abc123")
    source = {"config": "a" * 64, "data": "b" * 64, "code": "c" * 64, "pins": "d" * 64, "toolchain": "e" * 64,
              "compiler": "f" * 64}
    report: CheckpointReport = {
        "checkpoints": {"every": 1, "keep": 2, "written": 2},
        "resumed_from": {"path": "out/checkpoints/step-00000001", "step": 1} if resumed else None,
        "resumes": [{"step": 1, "checkpoint": "step-00000001", "source": source}] if resumed else [],
        "skipped_checkpoints": [],
    }
    write_outputs(tmp_path, result, lock["inputs"], lock["build"], 1, 0.0,
                  {"git": {"commit": "0" * 40, "dirty": False}, **report})
    run = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(json.loads(RUN_SCHEMA.read_text(encoding="utf-8"))).validate(run)
    assert set(run) == set(r.RunRecord.__required_keys__)
