"""A build's output files beside the lock: weights, metrics.jsonl, a task's exports.

`repro.build.run` calls `write_outputs` once training is done and puts what it
returns in the lock's `outputs`; the lock itself is written last, by run.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repro.canonical import atomic_write_bytes
from repro.errors import ConfigError
from repro.filenames import METRICS_NAME, OWN_OUTPUTS, WEIGHTS_NAME
from repro.lock import lockfile

if TYPE_CHECKING:
    from repro.train.loop import TrainResult


def write_outputs(out_dir: Path, result: TrainResult, every: int) -> dict[str, Any]:
    """Write the exports, the weights and metrics.jsonl into `out_dir`; return the lock's `outputs`."""
    from repro.train.weights import save_weights, tensor_records

    out_dir.mkdir(parents=True, exist_ok=True)
    exported = write_exports(out_dir, result.exports)
    weights = save_weights(result.state, out_dir / WEIGHTS_NAME)
    metrics_lines = [
        json.dumps({"loss": result.losses[s - 1], "step": s}, sort_keys=True)
        for s in lockfile.logged_steps(len(result.losses), every)
    ]
    atomic_write_bytes(out_dir / METRICS_NAME, ("\n".join(metrics_lines) + "\n").encode())
    outputs: dict[str, Any] = {
        "weights": {"path": WEIGHTS_NAME, "size": len(weights),
                    "hashes": {"sha256": hashlib.sha256(weights).hexdigest()}, "tensors": tensor_records(result.state)},
        "final_loss": result.losses[-1] if result.losses else None,
        "loss_trajectory": loss_trajectory(result.losses, every),
        "metrics": result.metrics,
    }
    # Only tasks with the optional hooks add these, so other locks keep their bytes.
    if exported:
        outputs["files"] = exported
    if result.samples:
        outputs["samples"] = result.samples
    return outputs


def loss_trajectory(losses: list[float], every: int) -> dict[str, Any]:
    """Every `every`-th loss in the lock, and a digest over all of them (float64 LE)."""
    blob = b"".join(struct.pack("<d", v) for v in losses)
    logged = [losses[s - 1] for s in lockfile.logged_steps(len(losses), every)]
    return {"every": every, "steps": len(losses), "losses": logged, "sha256": hashlib.sha256(blob).hexdigest()}



def write_exports(out_dir: Path, files: dict[str, bytes]) -> list[dict[str, Any]]:
    """Write a task's exported files beside the weights; return their lock records."""
    for name in files:  # all checked before anything is written
        if name in OWN_OUTPUTS or "/" in name or "\\" in name or name.startswith(".") or not name:
            raise ConfigError(f"task export {name!r}: expected a plain file name other than repro's own outputs")
    records = []
    for name in sorted(files):
        atomic_write_bytes(out_dir / name, files[name])
        digest = hashlib.sha256(files[name]).hexdigest()
        records.append({"path": name, "size": len(files[name]), "hashes": {"sha256": digest}})
    return records
