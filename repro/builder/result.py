"""What one build reports back: where its outputs went and their headline digests.

The build child makes it and sends it to the launching process over the same
channel as its errors (`repro.builder.child`); the CLI prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repro.builder.spec import decode, to_json


@dataclass(frozen=True)
class BuildReport:
    """Where the outputs went and their headline digests, for the CLI to print."""

    out_dir: Path
    weights_sha256: str
    lock_sha256: str
    config_sha256: str
    data_root_digest: str
    metrics: dict[str, float]
    final_loss: float | None
    seconds: float
    resumed_from_step: int | None = None
    samples: tuple[str, ...] = ()

    def to_json(self) -> object:
        return to_json(self)

    @classmethod
    def from_json(cls, raw: object) -> BuildReport:
        return decode(cls, raw, "build report")
