"""A fine-tune's base: which files of its release folder are the base's source."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.errors import LockfileError
from repro.filenames import CHECK_NAME, PROVENANCE_NAME, RECORD_NAME, RUN_NAME, SIGNATURE_NAME
from repro.lock.inputs_record import base_lock
from repro.source.base_model import base_block, release_files


def _release(root: Path) -> Path:
    folder = root / "base"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text('{"hidden": 8}')
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_evidence_written_beside_a_release_is_not_its_source(tmp_path: Path) -> None:
    """Verifying, checking, attesting or signing a base after a fine-tune was locked leaves the base unchanged."""
    folder = _release(tmp_path)
    before = base_block(tmp_path, "base", None)
    for name in (RUN_NAME, RECORD_NAME, CHECK_NAME, PROVENANCE_NAME, SIGNATURE_NAME, "README.md", ".partial.json"):
        (folder / name).write_text("{}")
    assert release_files(tmp_path, "base") == ["base/config.json", "base/model.safetensors", "base/tokenizer.json"]
    assert base_block(tmp_path, "base", None) == before


def test_a_file_the_model_may_load_is_source(tmp_path: Path) -> None:
    folder = _release(tmp_path)
    before = base_block(tmp_path, "base", None)["root_digest"]
    (folder / "generation_config.json").write_text("{}")
    assert "base/generation_config.json" in release_files(tmp_path, "base")
    assert base_block(tmp_path, "base", None)["root_digest"] != before


def test_the_base_lock_is_read_by_the_one_lock_reader_beneath_the_root(tmp_path: Path) -> None:
    """A base's repro.lock goes through lockfile.load: schema-checked, and never read through a link
    that leaves the project."""
    (tmp_path / "base").mkdir()
    assert base_lock(tmp_path, "base") is None  # no lock: an unverified base
    (tmp_path / "base" / "repro.lock").write_text('{"version": 2, "inputs": {}}\n')
    with pytest.raises(LockfileError, match="base/repro.lock"):
        base_lock(tmp_path, "base")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.lock"
    outside.write_text("{}\n")
    (tmp_path / "base" / "repro.lock").unlink()
    (tmp_path / "base" / "repro.lock").symlink_to(outside)
    with pytest.raises(LockfileError):
        base_lock(tmp_path, "base")
