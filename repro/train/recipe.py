"""`Recipe`: what the training loop reads of a build, as one typed value.

A `repro.builder.spec.BuildSpec` holds one; `repro.train.loop.train` takes it and
nothing else from the config, so every setting the loop can see is here, checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repro.environment.pins import Pins
from repro.source.components import Components
from repro.source.config import TrainerSpec
from repro.source.data import DataFiles, DataSpec


@dataclass(frozen=True)
class Recipe:
    """The pins, the loop's knobs, the data (spec and files, globbed once), the components and the root."""

    pins: Pins
    trainer: TrainerSpec
    data: DataSpec
    components: Components
    files: DataFiles
    root: Path  # absolute: data files, a fine-tune's base and a task's files are relative to it
