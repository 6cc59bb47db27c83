"""What every run of `repro check` builds from: the config source, the user's overrides, the step count.

Made once by `repro.check.check_report` (or `localize`), read by the variations
(`repro.check.variations`) and the runs (`repro.check.runs`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.source.config import ConfigSource


@dataclass
class Project:
    """What every run builds: the config source, the user's overrides and the step count."""

    source: ConfigSource
    overrides: list[str]
    resolved: dict[str, Any]
    steps: int
    work: Path
    python: str = sys.executable
    needed: list[str] = field(default_factory=list)  # the files the baseline build read (data, code, records)
    clone: list[str] | None = None  # what a clone holds (repro.builder.clone), read once
    counter: list[int] = field(default_factory=lambda: [0])

    def folder(self, name: str) -> Path:
        self.counter[0] += 1
        path = self.work / f"{self.counter[0]:02d}-{name}"
        path.mkdir(parents=True)
        return path
