"""Capture and restore everything the next training step depends on, as tensors plus JSON.

Model, optimizer, scheduler and grad scaler state, every RNG the loop can draw
from, the losses so far and the position in the sample order. Tensors go to
safetensors; the rest is plain JSON with explicit integers and hex bytes, so a
checkpoint never holds anything that runs code when read.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load, load_file, save_file
from torch import nn

from repro.errors import CheckpointError
from repro.filenames import OPTIMIZER_NAME
from repro.train import checkpoint
from repro.train.checkpoint import MODEL_NAME, VERSION, Checkpoint, RngState, StepState, Writer
from repro.train.sampling import OrderDigest, SampleOrder
from repro.train.weights import METADATA

_SCALARS = (bool, int, str, type(None))


@dataclass
class Parts:
    """The stateful objects of one run (the model unwrapped from accelerate)."""

    model: nn.Module
    optimizer: Any
    scheduler: Any | None
    scaler: Any | None


def capture(step: int, parts: Parts, order: SampleOrder, losses: list[float],
            digest: OrderDigest, step_digests: list[str]) -> tuple[dict[str, Writer], StepState]:
    """Writers of the safetensors files and the JSON state of a checkpoint after `step` steps.

    The writers read the live tensors: call them before the next step.
    """
    tensors: dict[str, torch.Tensor] = {}
    epoch, offset = order.position(step)
    state: StepState = {
        "version": VERSION,
        "step": step,
        "sample_order": {"epoch": epoch, "offset": offset, "count": digest.count, "sha256": digest.hexdigest()},
        "losses": list(losses),
        "step_digests": list(step_digests),
        "rng": rng_state(),
        "optimizer": encode(parts.optimizer.state_dict(), "optimizer", tensors),
        "scheduler": None if parts.scheduler is None else encode(parts.scheduler.state_dict(), "scheduler", tensors),
        "grad_scaler": None if parts.scaler is None else encode(parts.scaler.state_dict(), "grad_scaler", tensors),
    }
    model = _serialisable(parts.model.state_dict())
    optim = _serialisable(tensors)
    writers: dict[str, Writer] = {  # optimizer first: for Adam it is twice the model
        OPTIMIZER_NAME: lambda path: save_file(optim, str(path), metadata=METADATA),
        MODEL_NAME: lambda path: save_file(model, str(path), metadata=METADATA),
    }
    return writers, state


def restore(ckpt: Checkpoint, parts: Parts, order: SampleOrder) -> tuple[OrderDigest, list[float]]:
    """Put the run back where `ckpt` was taken; the RNGs last, so nothing draws after them."""
    state, where = ckpt.state, ckpt.path.name
    try:
        parts.model.load_state_dict(_load_checked(ckpt, MODEL_NAME), strict=True)
        tensors = _load_checked(ckpt, OPTIMIZER_NAME)
        parts.optimizer.load_state_dict(decode(state["optimizer"], tensors))
        for key, obj, saved in (("scheduler", parts.scheduler, state["scheduler"]),
                                ("grad_scaler", parts.scaler, state["grad_scaler"])):
            if (obj is None) != (saved is None):
                raise CheckpointError(f"{where}: {key} state is {'absent' if saved is None else 'present'} "
                                      f"but this run {'has' if obj is not None else 'has no'} {key}")
            if obj is not None:
                obj.load_state_dict(decode(saved, tensors))
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:  # shape/name mismatches, bad tags
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{where}: cannot restore it into this run: {first}") from None
    digest = OrderDigest()
    for s in range(ckpt.step):  # the order is a pure function of the step: recompute, then check
        digest.update(order.batch(s))
    if digest.hexdigest() != state["sample_order"]["sha256"] or digest.count != state["sample_order"]["count"]:
        raise CheckpointError(f"{where}: the sample order up to step {ckpt.step} differs from the recorded one")
    try:  # checkpoint.check_state checked the shapes; the libraries have the last word on the values
        set_rng_state(state["rng"], where)
    except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{where}/state.json: field 'rng': cannot restore it ({first})") from None
    return digest, [float(v) for v in state["losses"]]


def _load_checked(ckpt: Checkpoint, name: str) -> dict[str, torch.Tensor]:
    """The tensors of checkpoint file `name`, loaded from the very file `checkpoint.read` hashed.

    Never reopened by name: safetensors opens `/proc/self/fd/N`, which is the open
    file behind the checked descriptor whatever the name now points at; without
    /proc its bytes are read through the descriptor. Either way the file's stat must
    be the one its digest was taken under, before and after.
    """
    fd = checkpoint.open_checked(ckpt, name)
    try:
        proc = f"/proc/self/fd/{fd}"
        tensors = load_file(proc) if os.path.exists(proc) else load(b"".join(iter(lambda: os.read(fd, 1 << 20), b"")))
        checkpoint.still_checked(ckpt, name, fd)
    finally:
        os.close(fd)
    return tensors


def rng_state() -> RngState:
    """python, numpy (legacy global), torch CPU and every initialised CUDA device, as JSON."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    # Only devices this process already uses: asking an idle one would initialise CUDA.
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and _cuda_ready() else []
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {"bit_generator": name, "keys": [int(k) for k in keys], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": _hex(torch.get_rng_state()),
        "cuda": [_hex(s) for s in cuda],
    }


def set_rng_state(rng: RngState, where: str) -> None:
    py = rng["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    n = rng["numpy"]
    np.random.set_state((n["bit_generator"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(_unhex(rng["torch"]))
    if rng["cuda"]:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have != len(rng["cuda"]):
            raise CheckpointError(f"{where}: saved on {len(rng['cuda'])} CUDA devices, this process sees {have}")
        torch.cuda.set_rng_state_all([_unhex(s) for s in rng["cuda"]])


def encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A state_dict as JSON: tensors move to `tensors` under their path; tags keep what JSON would lose.

    Tags: {"$tensor": name}, {"$tuple": [...]}, {"$float": "inf"|"-inf"|"nan"}, and
    {"$items": [[key, value], ...]} for mappings whose keys are not plain strings.
    """
    if isinstance(obj, torch.Tensor):
        if path in tensors:
            raise CheckpointError(f"state key {path}: two tensors would share this name")
        tensors[path] = obj
        return {"$tensor": path}
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"$float": repr(obj)}
    if isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, tuple):
        return {"$tuple": [encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: encode(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        return {"$items": [[encode(k, f"{path}.key", {}), encode(v, f"{path}.{k}", tensors)] for k, v in obj.items()]}
    raise CheckpointError(f"state key {path}: a {type(obj).__name__} cannot be checkpointed without pickling; "
                          "keep optimizer and scheduler state to tensors, numbers, strings, lists and dicts")


def decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `encode`."""
    if isinstance(node, list):
        return [decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (tag, value), = node.items()
        if tag == "$tensor":
            return tensors[value]
        if tag == "$float":
            return float(value)
        if tag == "$tuple":
            return tuple(decode(v, tensors) for v in value)
        if tag == "$items":
            return {decode(k, tensors): decode(v, tensors) for k, v in value}
    return {k: decode(v, tensors) for k, v in node.items()}


def _serialisable(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, sorted; copied only where storage is shared (safetensors refuses that).

    Unlike `weights.to_cpu_state` this does not clone every tensor: they are
    written at once, while the loop waits, so a copy would only cost time and memory.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _cuda_ready() -> bool:
    return bool(torch.cuda.is_initialized())  # type: ignore[no-untyped-call]


def _hex(t: torch.Tensor) -> str:
    return bytes(t.cpu().contiguous().numpy().tobytes()).hex()


def _unhex(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray.fromhex(text), dtype=torch.uint8).clone()
