"""Write and read weights as byte-stable safetensors.

safetensors 0.8.0 writes a `__metadata__` of two or more keys in a random order
on each call, so we write exactly one key (`format: pt`, which `transformers`
expects) and keep everything else in the lockfile.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save

from repro.canonical import atomic_write_bytes, sha256_bytes
from repro.lock.types import TensorRecord

METADATA = {"format": "pt"}


def to_cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies with sorted names (shared storage split)."""
    return {k: state[k].detach().to("cpu").contiguous().clone() for k in sorted(state)}


def weights_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """The safetensors bytes of `state` (sorted names, one metadata key: byte-stable)."""
    return save(to_cpu_state(state), metadata=METADATA)


def save_weights(state: dict[str, torch.Tensor], path: Path) -> bytes:
    """Serialise to safetensors and write atomically; return the bytes written."""
    data = weights_bytes(state)
    atomic_write_bytes(path, data)
    return data


def tensor_sha256(t: torch.Tensor) -> str:
    raw = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    return sha256_bytes(raw.tobytes())


def tensor_records(state: dict[str, torch.Tensor]) -> list[TensorRecord]:
    """Per-tensor name, dtype, shape and sha256 of its raw bytes, sorted by name."""
    return [
        {"name": k, "dtype": str(state[k].dtype).removeprefix("torch."), "shape": list(state[k].shape),
         "sha256": tensor_sha256(state[k])}
        for k in sorted(state)
    ]
