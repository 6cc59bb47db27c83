"""Which rank this process is, and the process group it joins. No process spawning here.

The launcher (`repro.builder.child`, torchrun or `accelerate launch`) starts the
ranks; these helpers only read what it set and wait for peers.
"""

from __future__ import annotations

import os
from datetime import timedelta

from repro.environment.pins import Pins
from repro.errors import ConfigError

# How long a collective may wait for a silent peer before the run is failed.
COLLECTIVE_TIMEOUT = timedelta(seconds=120)


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) when not launched."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def under_launcher() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_world(pins: Pins) -> tuple[int, int]:
    """Refuse a launch whose process count differs from the pinned world size."""
    rank, size = world()
    if size != pins.world_size:
        raise ConfigError(f"build.world_size is {pins.world_size} but the launcher started {size} processes; "
                          f"set build.world_size={size} (the world size decides the bits)")
    return rank, size


def barrier(pins: Pins) -> None:
    """Join the process group (gloo on CPU, NCCL on GPU) and wait for every rank."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if pins.device == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    dist.barrier()
