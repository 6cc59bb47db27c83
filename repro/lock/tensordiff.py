"""Weights files without torch: per-tensor digests and element-wise differences.

`safetensors.deserialize` hands back each tensor's raw little-endian bytes, which
are exactly what `repro.train.weights.tensor_sha256` hashes, so a downloaded file can be
checked tensor by tensor with no torch and no pickle. Element comparisons use
numpy views of those bytes; bfloat16 is widened to float32 by a 16-bit shift.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repro.errors import DataError
from repro.safeio import MAX_TENSOR_FILE_BYTES, read_bytes

# safetensors dtype codes -> (lock dtype name, numpy dtype or None when numpy has none).
DTYPES: dict[str, tuple[str, Any]] = {
    "F64": ("float64", np.float64), "F32": ("float32", np.float32), "F16": ("float16", np.float16),
    "BF16": ("bfloat16", None), "I64": ("int64", np.int64), "I32": ("int32", np.int32),
    "I16": ("int16", np.int16), "I8": ("int8", np.int8), "U8": ("uint8", np.uint8),
    "U16": ("uint16", np.uint16), "U32": ("uint32", np.uint32), "U64": ("uint64", np.uint64),
    "BOOL": ("bool", np.bool_),
}


@dataclass(frozen=True)
class RawTensor:
    name: str
    dtype: str  # the safetensors code, e.g. "F32"
    shape: list[int]
    data: bytes

    def record(self) -> dict[str, Any]:
        """The lock's per-tensor record (name, dtype, shape, sha256 of the raw bytes)."""
        dtype = DTYPES.get(self.dtype, (self.dtype.lower(), None))[0]
        return {"name": self.name, "dtype": dtype, "shape": list(self.shape),
                "sha256": hashlib.sha256(self.data).hexdigest()}


def read_tensors(path: Path, follow_links: bool = True) -> dict[str, RawTensor]:
    """Parse a safetensors file into raw tensors; a corrupt, oversized or non-regular file is a DataError."""
    from safetensors import SafetensorError, deserialize

    raw = read_bytes(path, "weights file", MAX_TENSOR_FILE_BYTES, DataError, follow_links)
    try:
        parsed = deserialize(raw)  # type: ignore[no-untyped-call]  # safetensors ships no stubs
    except SafetensorError as exc:
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from None
    return {name: RawTensor(name, info["dtype"], list(info["shape"]), bytes(info["data"])) for name, info in parsed}


def _as_array(t: RawTensor) -> np.ndarray | None:
    if t.dtype == "BF16":
        wide = np.frombuffer(t.data, dtype="<u2").astype(np.uint32) << 16
        return wide.view(np.float32)
    np_dtype = DTYPES.get(t.dtype, ("", None))[1]
    if np_dtype is None:
        return None
    return np.frombuffer(t.data, dtype=np.dtype(np_dtype).newbyteorder("<"))


def element_diff(a: RawTensor, b: RawTensor) -> dict[str, Any]:
    """How many elements differ bit for bit, and the largest absolute difference.

    Bits, not values, decide "differ": -0.0 vs 0.0 and NaN payloads count.
    Returns {"elements", "differing", "max_abs_diff"} (max_abs_diff None when the
    dtype has no numeric view or the shapes disagree).
    """
    count = int(np.prod(a.shape)) if a.shape else 1
    if a.dtype != b.dtype or a.shape != b.shape:
        return {"elements": count, "differing": count, "max_abs_diff": None}
    xa, xb = _as_array(a), _as_array(b)
    itemsize = len(a.data) // count if count else 1
    bits_a = np.frombuffer(a.data, dtype=np.uint8).reshape(count, itemsize)
    bits_b = np.frombuffer(b.data, dtype=np.uint8).reshape(count, itemsize)
    differing = int(np.count_nonzero((bits_a != bits_b).any(axis=1))) if count else 0
    max_abs: float | None = None
    if xa is not None and xb is not None and count:
        with np.errstate(all="ignore"):
            delta = np.abs(xa.astype(np.float64) - xb.astype(np.float64))
        max_abs = float(np.nanmax(delta)) if not np.isnan(delta).all() else None
    return {"elements": count, "differing": differing, "max_abs_diff": max_abs}
