"""Seeding: the one function a build or a stage seeds its random generators with. No torch import.

It seeds what the process has imported, and imports nothing itself: a stage that
never imported torch stays torch-free, and the training process has numpy and
torch loaded (repro.train.determinism) before it seeds.
"""

from __future__ import annotations

import random
import sys


def seed_everything(seed: int) -> dict[str, int]:
    """Seed Python's generator, and numpy's and torch's (all devices) where they are imported; return the seeds."""
    random.seed(seed)
    seeds = {"python": seed}
    if "numpy" in sys.modules:
        seeds["numpy"] = seed % 2**32  # numpy's legacy seed takes 32 bits
        sys.modules["numpy"].random.seed(seeds["numpy"])
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)  # also seeds every CUDA device
        seeds["torch"] = seed
    return seeds
