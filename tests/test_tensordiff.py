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
    raw = read_tensors(tmp_path / "m.safetensors")
    assert [raw[k].record() for k in sorted(raw)] == tensor_records(state)


def test_element_diff_counts_bits_and_measures_values(tmp_path: Path) -> None:
    a = np.zeros(8, dtype=np.float32)
    b = a.copy()
    b[2], b[5] = 0.5, -0.25
    b[7] = -0.0  # equal as a value, different as bits: counts as differing
    save_file({"t": a}, str(tmp_path / "a.safetensors"))
    save_file({"t": b}, str(tmp_path / "b.safetensors"))
    d = element_diff(read_tensors(tmp_path / "a.safetensors")["t"], read_tensors(tmp_path / "b.safetensors")["t"])
    assert d == {"elements": 8, "differing": 3, "max_abs_diff": 0.5}


def test_bfloat16_is_widened_exactly(tmp_path: Path) -> None:
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16)
    b = torch.tensor([1.0, 2.0, 3.015625], dtype=torch.bfloat16)  # one bf16 ulp above 3
    save_weights({"t": a}, tmp_path / "a.safetensors")
    save_weights({"t": b}, tmp_path / "b.safetensors")
    d = element_diff(read_tensors(tmp_path / "a.safetensors")["t"], read_tensors(tmp_path / "b.safetensors")["t"])
    expected = float((b.float() - a.float()).abs().max())
    assert d == {"elements": 3, "differing": 1, "max_abs_diff": expected}


def test_shape_change_counts_every_element(tmp_path: Path) -> None:
    save_file({"t": np.zeros((2, 3), np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({"t": np.zeros((3, 2), np.float32)}, str(tmp_path / "b.safetensors"))
    d = element_diff(read_tensors(tmp_path / "a.safetensors")["t"], read_tensors(tmp_path / "b.safetensors")["t"])
    assert d == {"elements": 6, "differing": 6, "max_abs_diff": None}


def test_unreadable_file_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(DataError, match="not a readable safetensors file"):
        read_tensors(bad)
    with pytest.raises(DataError, match="no such weights file"):
        read_tensors(tmp_path / "missing.safetensors")
