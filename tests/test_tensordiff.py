"""Torch-free weights checks agree with the torch-side writer, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from repro.errors import DataError
from repro.lock.tensordiff import element_diff, read_tensors
from repro.train.weights import save_weights, tensor_records


def test_records_match_what_the_lock_writer_records(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(3, 4, generator=g), "h": torch.randn(5, generator=g).to(torch.bfloat16),
             "n": torch.arange(6, dtype=torch.int64)}
    save_weights(state, tmp_path / "m.safetensors")
    with read_tensors(tmp_path / "m.safetensors") as raw:
        assert [raw.tensors[k].record() for k in sorted(raw.tensors)] == tensor_records(state)


def test_element_diff_counts_bits_and_measures_values(tmp_path: Path) -> None:
    a = np.zeros(8, dtype=np.float32)
    b = a.copy()
    b[2], b[5] = 0.5, -0.25
    b[7] = -0.0  # equal as a value, different as bits: counts as differing
    save_file({"t": a}, str(tmp_path / "a.safetensors"))
    save_file({"t": b}, str(tmp_path / "b.safetensors"))
    d = _diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert d == {"elements": 8, "differing": 3, "max_abs_diff": 0.5}


def test_bfloat16_is_widened_exactly(tmp_path: Path) -> None:
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16)
    b = torch.tensor([1.0, 2.0, 3.015625], dtype=torch.bfloat16)  # one bf16 ulp above 3
    save_weights({"t": a}, tmp_path / "a.safetensors")
    save_weights({"t": b}, tmp_path / "b.safetensors")
    d = _diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    expected = float((b.float() - a.float()).abs().max())
    assert d == {"elements": 3, "differing": 1, "max_abs_diff": expected}


def test_shape_change_counts_every_element(tmp_path: Path) -> None:
    save_file({"t": np.zeros((2, 3), np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({"t": np.zeros((3, 2), np.float32)}, str(tmp_path / "b.safetensors"))
    d = _diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert d == {"elements": 6, "differing": 6, "max_abs_diff": None}


def _diff(a: Path, b: Path, chunk: int | None = None) -> dict[str, object]:
    with read_tensors(a) as fa, read_tensors(b) as fb:
        if chunk is None:
            return element_diff(fa.tensors["t"], fb.tensors["t"])
        import repro.lock.tensordiff as td

        old, td.CHUNK_BYTES = td.CHUNK_BYTES, chunk
        try:
            return element_diff(fa.tensors["t"], fb.tensors["t"])
        finally:
            td.CHUNK_BYTES = old


def test_the_comparison_streams_in_chunks_with_the_same_answer(tmp_path: Path) -> None:
    """Chunks of 3 elements of a 1,000-element tensor: the counts and the maximum are those of one pass."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(1000).astype(np.float32)
    b = a.copy()
    b[[3, 500, 999]] += np.float32(0.125)
    b[7] = np.nan
    save_file({"t": a}, str(tmp_path / "a.safetensors"))
    save_file({"t": b}, str(tmp_path / "b.safetensors"))
    whole = _diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert whole == _diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors", chunk=12)
    assert whole["differing"] == 4


def test_a_huge_sparse_weights_file_is_checked_in_bounded_memory(tmp_path: Path) -> None:
    """Issue 29, vector 13: 256 MiB of (sparse) tensor bytes is hashed a chunk at a time, never held whole."""
    import json
    import resource
    import struct

    header = json.dumps({"t": {"dtype": "F32", "shape": [1 << 26], "data_offsets": [0, 1 << 28]}}).encode()
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(8 + len(header) + (1 << 28))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with read_tensors(path) as w:
        record = w.tensors["t"].record()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert record["shape"] == [1 << 26] and grown_kib < 64 << 10  # far below the 256 MiB the file holds


@pytest.mark.parametrize(("header", "why"), [
    (b'{"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}', "bytes for shape"),
    (b'{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4000]}}', "past the end"),
    (b'{"t": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}', "unknown dtype"),
    (b'{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "t": {}}', "duplicate key"),
])
def test_a_header_that_does_not_match_the_file_is_refused(tmp_path: Path, header: bytes, why: str) -> None:
    import struct

    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(DataError, match=why):
        read_tensors(path)


def test_a_header_length_over_the_cap_is_refused_before_reading_it(tmp_path: Path) -> None:
    import struct

    from repro.lock.tensordiff import MAX_HEADER_BYTES

    path = tmp_path / "bad.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", MAX_HEADER_BYTES + 1))
        fh.truncate(MAX_HEADER_BYTES + 100)
    with pytest.raises(DataError, match="over the"):
        read_tensors(path)


def test_unreadable_file_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(DataError, match="not a readable safetensors file"):
        read_tensors(bad)
    with pytest.raises(DataError, match="no such weights file"):
        read_tensors(tmp_path / "missing.safetensors")
