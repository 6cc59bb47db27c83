"""A digest of every parameter before the first step and after every step: where two runs part.

Every run records `StepDigests`: one XXH3-128 digest over the bytes of every
parameter, in `named_parameters()` order. Hashing only reads the tensors'
memory; it draws no random number and changes no value, so the weights are the
same with or without it. The list goes beside the weights (`step_digests.txt`)
and its digest into the lock, so two runs' first differing step can be named
exactly, not rounded to the logging interval (`repro.lock.lockdiff.first_differing_step`).
"""

from __future__ import annotations

import torch
import xxhash
from torch import nn


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of a tensor (a read, never a copy on CPU unless non-contiguous)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    flat = t.contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data


class StepDigests:
    """One digest over every parameter before the first step and after every step.

    `digests[0]` is the initial parameters, `digests[n]` those after step n. On
    resume the list comes from the checkpoint. The digest is XXH3-128: it only has
    to tell two honest runs apart, at about a microsecond per step (sha256 would
    cost the digits loop ~6%); the file of digests is sha256-hashed into the lock.
    CPU parameters are read through numpy views made once (optimizers update in
    place); a parameter whose storage moved gets a fresh view.
    """

    def __init__(self, model: nn.Module, done: list[str] | None = None) -> None:
        self.params = [p for _, p in model.named_parameters()]
        self.views: list[tuple[int, memoryview | None]] = [(-1, None)] * len(self.params)
        self.digests: list[str] = list(done or [])
        if not self.digests:
            self.record()

    def _view(self, i: int, p: torch.Tensor) -> memoryview:
        ptr, view = self.views[i]
        if view is not None and ptr == p.data_ptr():
            return view
        if p.device.type != "cpu" or not p.is_contiguous():
            return tensor_bytes(p)
        view = tensor_bytes(p)  # shares the parameter's memory: valid while its storage stays
        self.views[i] = (p.data_ptr(), view)
        return view

    def record(self) -> None:
        h = xxhash.xxh3_128()
        for i, p in enumerate(self.params):
            h.update(self._view(i, p))
        self.digests.append(h.hexdigest())


def step_digests_blob(digests: list[str]) -> bytes:
    """The file beside the weights: one hex digest per line; the first line is the initial
    parameters, line n + 1 the parameters after step n."""
    return "".join(d + "\n" for d in digests).encode("ascii")
