"""Can this machine honour the device, precision and world-size pins? Asked before any hashing.

No pin may be recorded unless it held: a lock that says `device: cuda` must hold
weights trained on a GPU. So a pin this machine cannot honour is refused here
(EnvironmentMismatch, exit 3) before the data are hashed or anything is written.
Torch is imported here, so callers apply the process pins first.
"""

from __future__ import annotations

from repro.environment.pins import Pins
from repro.errors import EnvironmentMismatch


def check_supported(pins: Pins) -> None:
    """Raise EnvironmentMismatch naming the pin that this machine cannot honour."""
    import torch
    import torch.distributed as dist

    if pins.device == "cpu" and pins.precision == "fp16":
        raise EnvironmentMismatch(
            "build.precision=fp16 on the CPU: accelerate runs fp16 autocast and its grad scaler only on "
            "accelerators, so the weights would be fp32 ones recorded as fp16; use bf16 or fp32 on the CPU")
    if pins.device == "cuda":
        if not torch.cuda.is_available():
            build = torch.__version__ + ("" if torch.version.cuda else ", a CPU-only build")
            raise EnvironmentMismatch(
                f"build.device=cuda: this machine has no usable CUDA device (torch {build}); "
                "train with build.device=cpu, or on a machine with a GPU")
        if pins.precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise EnvironmentMismatch(
                f"build.precision=bf16: {torch.cuda.get_device_name()} has no bf16 support; use fp32 or fp16")
        if pins.world_size > torch.cuda.device_count():
            raise EnvironmentMismatch(
                f"build.world_size={pins.world_size}: NCCL needs one GPU per rank and this machine has "
                f"{torch.cuda.device_count()}")
    if pins.world_size > 1:
        backend, available = ("nccl", dist.is_nccl_available()) if pins.device == "cuda" else \
            ("gloo", dist.is_gloo_available())
        if not dist.is_available() or not available:
            raise EnvironmentMismatch(
                f"build.world_size={pins.world_size}: this torch build cannot start the {backend} backend "
                f"that several ranks on {pins.device} need")
