"""The lock's data section beyond the basics: extra algorithms and the preprocess record."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from test_lockfile import H, sample_lock

from repro.errors import LockfileError
from repro.lock import lockfile

GOLDEN = Path(__file__).parent / "fixtures" / "lockfile" / "golden-v2-data.lock"
B2 = "cd" * 64


def data_lock() -> dict[str, Any]:
    lock = copy.deepcopy(sample_lock())
    data = lock["inputs"]["data"]
    data["files"][0]["hashes"]["blake2b"] = B2
    data["preprocess"] = {"target": "prep.pixels", "file": {"path": "prep.py", "size": 7, "hashes": {"sha256": H}}}
    lockfile.validate(lock, "sample")
    return lock


def test_writer_matches_golden_bytes(tmp_path: Path) -> None:
    lockfile.write(tmp_path / "repro.lock", data_lock())
    assert (tmp_path / "repro.lock").read_bytes() == GOLDEN.read_bytes()


def test_golden_reads_back() -> None:
    assert lockfile.read(GOLDEN) == data_lock()


def test_a_package_preprocess_record_is_valid() -> None:
    lock = data_lock()
    lock["inputs"]["data"]["preprocess"] = {"target": "datasets.concatenate_datasets",
                                            "package": {"name": "datasets", "version": "5.2.0"}}
    lockfile.validate(lock, "sample")


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: d["files"][0]["hashes"].update(blake2b="not hex"), "inputs.data.files.0.hashes.blake2b"),
    (lambda d: d["preprocess"].update(package={"name": "x", "version": "1"}), "inputs.data.preprocess"),
    (lambda d: d["preprocess"].pop("file"), "inputs.data.preprocess"),
    (lambda d: d["preprocess"]["file"].update(path="../prep.py"), "inputs.data.preprocess.file.path"),
    (lambda d: d["preprocess"].pop("target"), "'target' is a required property"),
])
def test_bad_data_sections_fail_with_the_field_named(tmp_path: Path, mutate: Any, needle: str) -> None:
    lock = data_lock()
    mutate(lock["inputs"]["data"])
    (tmp_path / "repro.lock").write_text(json.dumps(lock))
    with pytest.raises(LockfileError, match=needle.replace(".", r"\.")):
        lockfile.read(tmp_path / "repro.lock")
