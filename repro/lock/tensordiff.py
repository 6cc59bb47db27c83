"""Weights files without torch: per-tensor digests and element-wise differences, in bounded memory.

A safetensors file is an 8-byte little-endian header length, a JSON header
naming each tensor's dtype, shape and byte range, then the bytes. The header is
read (capped at `MAX_HEADER_BYTES`, parsed strictly, every range checked against
the file); each tensor's raw little-endian bytes, exactly what
`repro.train.weights.tensor_sha256` hashes, are then streamed through the one
open descriptor in chunks. Nothing holds a whole file or a whole tensor: a 1 GiB
(sparse) file beside a stranger's lock costs a few MiB. Element comparisons use
numpy views of a chunk of each; bfloat16 is widened to float32 by a 16-bit shift.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from repro.errors import DataError
from repro.lock.types import TensorRecord
from repro.safeio import loads, open_regular, printable

MAX_HEADER_BYTES = 16 << 20  # a safetensors JSON header (~100 bytes a tensor; the library allows 100 MB)
CHUNK_BYTES = 4 << 20  # read per step when hashing or comparing a tensor

# safetensors dtype codes -> (lock dtype name, bytes per element, numpy dtype or None when numpy has none).
DTYPES: dict[str, tuple[str, int, Any]] = {
    "F64": ("float64", 8, np.float64), "F32": ("float32", 4, np.float32), "F16": ("float16", 2, np.float16),
    "BF16": ("bfloat16", 2, None), "I64": ("int64", 8, np.int64), "I32": ("int32", 4, np.int32),
    "I16": ("int16", 2, np.int16), "I8": ("int8", 1, np.int8), "U8": ("uint8", 1, np.uint8),
    "U16": ("uint16", 2, np.uint16), "U32": ("uint32", 4, np.uint32), "U64": ("uint64", 8, np.uint64),
    "BOOL": ("bool", 1, np.bool_),
}


@dataclass(frozen=True)
class Tensor:
    """One tensor of an open weights file: where its bytes lie, read through the file's descriptor."""

    file: WeightsFile
    name: str
    dtype: str  # the safetensors code, e.g. "F32"
    shape: list[int]
    begin: int  # absolute offsets in the file
    end: int

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The tensor's bytes in chunks of at most `size` (a multiple of the element size)."""
        step = max(DTYPES[self.dtype][1], size - size % DTYPES[self.dtype][1])
        offset = self.begin
        while offset < self.end:
            chunk = os.pread(self.file.fd, min(step, self.end - offset), offset)
            if not chunk:
                raise DataError(f"{printable(str(self.file.path))}: ends inside tensor {printable(self.name)}")
            offset += len(chunk)
            yield chunk

    def record(self) -> TensorRecord:
        """The lock's per-tensor record (name, dtype, shape, sha256 of the raw bytes)."""
        h = hashlib.sha256()
        for chunk in self.chunks():
            h.update(chunk)
        return {"name": self.name, "dtype": DTYPES[self.dtype][0], "shape": list(self.shape),
                "sha256": h.hexdigest()}


class WeightsFile:
    """An open safetensors file with its header checked; use as a context manager (it holds a descriptor)."""

    def __init__(self, path: Path, follow_links: bool = True, fd: int | None = None) -> None:
        self.path = Path(path)
        if fd is None:
            self.fd, st = open_regular(self.path, "weights file", DataError, follow_links)
        else:  # a descriptor the caller opened and checked: read that very file, never `path` again by name
            self.fd = os.dup(fd)
            st = os.fstat(self.fd)
        try:
            self.tensors = _header(self.fd, st.st_size, self, printable(str(self.path)))
        except BaseException:
            os.close(self.fd)
            raise

    def __enter__(self) -> WeightsFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        os.close(self.fd)

    def records(self) -> list[TensorRecord]:
        return [t.record() for t in self.tensors.values()]


def read_tensors(path: Path, follow_links: bool = True, fd: int | None = None) -> WeightsFile:
    """Open a safetensors file (`with read_tensors(p) as w: w.tensors[...]`); a corrupt, non-regular or
    oversized-header file is a DataError naming it. With `fd` (already opened and checked, e.g. by
    `safeio.open_regular`), the file behind it is read through a duplicate of it, and `path` only names it."""
    return WeightsFile(path, follow_links, fd)


def _header(fd: int, size: int, file: WeightsFile, shown: str) -> dict[str, Tensor]:
    """The tensors a header names, in the order of their bytes, after checking it against the file."""
    def bad(why: str) -> DataError:
        return DataError(f"{shown}: not a readable safetensors file ({why})")

    head = os.pread(fd, 8, 0)
    if len(head) < 8:
        raise bad("shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER_BYTES:
        raise bad(f"a header of {length} bytes, over the {MAX_HEADER_BYTES}-byte cap")
    if 8 + length > size:
        raise bad(f"a header of {length} bytes in a file of {size}")
    try:
        meta = loads(os.pread(fd, length, 8), "header", DataError)
    except DataError as exc:  # strict JSON: duplicate keys, NaN, depth, lone surrogates
        raise bad(str(exc)) from None
    if not isinstance(meta, dict):
        raise bad("the header is not a JSON object")
    start, out = 8 + length, []
    for name, info in meta.items():
        if name == "__metadata__":
            continue
        out.append(_tensor(name, info, start, size, file, bad))
    out.sort(key=lambda t: (t.begin, t.end))
    position = start
    for t in out:  # the format's rule: the ranges tile the byte buffer, no gap and no overlap
        if t.begin != position:
            raise bad(f"tensor {printable(t.name)} starts at byte {t.begin - start}, expected {position - start}")
        position = t.end
    if position != size:
        raise bad(f"{size - position} bytes after the last tensor")
    return {t.name: t for t in out}


def _tensor(name: str, info: Any, start: int, size: int, file: WeightsFile, bad: Any) -> Tensor:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise bad(f"tensor {printable(name)}: expected dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        raise bad(f"tensor {printable(name)}: unknown dtype {printable(repr(dtype))}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise bad(f"tensor {printable(name)}: shape must be a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise bad(f"tensor {printable(name)}: data_offsets must be [begin, end] with begin <= end")
    begin, end = start + offsets[0], start + offsets[1]
    if end > size:
        raise bad(f"tensor {printable(name)}: its bytes end past the end of the file")
    if end - begin != math.prod(shape) * DTYPES[dtype][1]:
        raise bad(f"tensor {printable(name)}: {end - begin} bytes for shape {shape} of {dtype}")
    return Tensor(file, name, dtype, list(shape), begin, end)


def _as_array(dtype: str, data: bytes) -> np.ndarray | None:
    if dtype == "BF16":
        wide = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return wide.view(np.float32)
    np_dtype = DTYPES[dtype][2]
    if np_dtype is None:
        return None
    return np.frombuffer(data, dtype=np.dtype(np_dtype).newbyteorder("<"))


def element_diff(a: Tensor, b: Tensor) -> dict[str, float | None]:
    """How many elements differ bit for bit, and the largest absolute difference, a chunk at a time.

    Bits, not values, decide "differ": -0.0 vs 0.0 and NaN payloads count.
    Returns {"elements", "differing", "max_abs_diff"} (max_abs_diff None when the
    dtype has no numeric view or the shapes disagree).
    """
    count = math.prod(a.shape) if a.shape else 1
    if a.dtype != b.dtype or a.shape != b.shape:
        return {"elements": count, "differing": count, "max_abs_diff": None}
    itemsize = DTYPES[a.dtype][1]
    differing, max_abs, numeric = 0, None, DTYPES[a.dtype][2] is not None or a.dtype == "BF16"
    for ca, cb in zip(a.chunks(), b.chunks(), strict=True):
        n = len(ca) // itemsize
        bits_a = np.frombuffer(ca, dtype=np.uint8).reshape(n, itemsize)
        bits_b = np.frombuffer(cb, dtype=np.uint8).reshape(n, itemsize)
        differing += int(np.count_nonzero((bits_a != bits_b).any(axis=1)))
        xa, xb = _as_array(a.dtype, ca), _as_array(b.dtype, cb)
        if xa is not None and xb is not None and n:
            with np.errstate(all="ignore"):
                delta = np.abs(xa.astype(np.float64) - xb.astype(np.float64))
            if not np.isnan(delta).all():
                top = float(np.nanmax(delta))
                max_abs = top if max_abs is None else max(max_abs, top)
    return {"elements": count, "differing": differing, "max_abs_diff": max_abs if numeric else None}
