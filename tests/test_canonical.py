from __future__ import annotations

import os
from pathlib import Path

import pytest

from repro.canonical import atomic_write_bytes, canonical_json
from repro.errors import OutputError


def test_canonical_json_golden_bytes() -> None:
    obj = {"b": [1, 2.5, None], "a": {"z": True, "é": "ü"}}
    assert canonical_json(obj) == (
        b'{\n  "a": {\n    "z": true,\n    "\xc3\xa9": "\xc3\xbc"\n  },\n  "b": [\n    1,\n    2.5,\n    null\n  ]\n}\n'
    )


def test_canonical_json_rejects_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"loss": float("nan")})


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.json"
    target.write_bytes(b"old")

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OutputError, match=r"x\.json: cannot write: disk full"):  # one line, exit 6
        atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
