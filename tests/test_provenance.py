"""SLSA Provenance v1 statements from hand-made locks: schema, protobuf shape, what goes where."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import without_run_details
from test_lockfile import H, sample_lock

from repro.trust.provenance import BUILD_TYPE, PREDICATE_TYPE, statement

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "docs" / "provenance.schema.json").read_text())
COMMIT = "c0ffee" * 6 + "c0ff"
RUN = {"finished_unix": 1_700_000_000, "wall_seconds": 12.5, "hostname": "builder-7", "argv": ["repro", "train"],
       "git": {"commit": COMMIT, "dirty": False}}


def validate_statement(stmt: dict[str, Any]) -> None:
    """Our JSON Schema, plus the official in-toto protobufs parsed strictly (no unknown fields)."""
    jsonschema.Draft202012Validator(SCHEMA).validate(stmt)
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    pb = json_format.ParseDict(stmt, statement_pb2.Statement(), ignore_unknown_fields=False)
    Statement.copy_from_pb(pb).validate()
    json_format.ParseDict(stmt["predicate"], provenance_pb2.Provenance(), ignore_unknown_fields=False)


def project_lock() -> dict[str, Any]:
    lock = copy.deepcopy(sample_lock())
    lock["inputs"]["code"]["files"] = [{"path": "configs/train.yaml", "size": 9, "hashes": {"sha256": "cd" * 32}}]
    lock["inputs"]["config"]["resolved"]["release"] = {"data_license": "CC-BY-4.0", "data_location": "url",
                                                       "data_url": "https://example.org/train.csv"}
    return lock


def test_statement_is_valid_slsa_provenance() -> None:
    stmt = statement(project_lock(), RUN, [{"name": "run.json", "digest": {"sha256": H}}])
    validate_statement(stmt)
    assert stmt["predicateType"] == PREDICATE_TYPE
    assert stmt["subject"] == [{"name": "model.safetensors", "digest": {"sha256": H}}]
    definition = stmt["predicate"]["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE
    assert definition["externalParameters"] == {"config": project_lock()["inputs"]["config"]["resolved"]}
    assert "packages" not in definition["internalParameters"] and definition["internalParameters"]["threads"] == 2
    assert stmt["predicate"]["runDetails"]["metadata"] == {"startedOn": "2023-11-14T22:13:07Z",
                                                           "finishedOn": "2023-11-14T22:13:20Z"}


def test_dependencies_carry_every_digest() -> None:
    deps = {d["name"]: d for d in statement(project_lock(), RUN, [])["predicate"]["buildDefinition"]
            ["resolvedDependencies"]}
    assert deps["data/train.csv"]["digest"] == {"sha256": H}
    assert deps["data"]["digest"] == {"dirHash": H} and deps["data"]["downloadLocation"] == "https://example.org/train.csv"
    assert deps["configs/train.yaml"]["digest"] == {"sha256": "cd" * 32}
    assert deps["code"]["digest"] == {"dirHash": H, "gitCommit": COMMIT}
    outside_git = statement(project_lock(), {**RUN, "git": None}, [])["predicate"]["buildDefinition"]
    assert {"name": "code", "digest": {"dirHash": H}, "annotations": {"role": "code-tree", "license": None}} in \
        outside_git["resolvedDependencies"]
    assert deps["repro"]["uri"] == "pkg:pypi/repro@0.2.0"
    assert deps["torch"]["uri"] == "pkg:pypi/torch@2.13.0%2Bcpu"  # purl percent-encodes '+'
    assert deps["python"]["uri"] == "pkg:generic/python@3.11.7"


def test_run_details_are_the_only_machine_part() -> None:
    a = statement(project_lock(), RUN, [{"name": "run.json", "digest": {"sha256": H}}])
    b = statement(project_lock(), {**RUN, "finished_unix": 1_800_000_000}, [], builder_id="https://ci.example/b")
    assert a != b and without_run_details(a) == without_run_details(b)
    assert "runDetails" not in without_run_details(a)["predicate"]


@pytest.mark.parametrize(("path", "value"), [
    (("predicateType",), "https://slsa.dev/provenance/v0.2"),
    (("predicate", "buildDefinition", "buildType"), "https://example.org/other"),
    (("subject",), []),
])
def test_schema_rejects_wrong_statements(path: tuple[str, ...], value: Any) -> None:
    stmt = statement(project_lock(), RUN, [])
    node = stmt
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(stmt)
