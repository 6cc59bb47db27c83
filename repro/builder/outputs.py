"""A build's files beside the lock: weights, metrics.jsonl, a task's exports, run.json, the lock last.

`repro.builder.build` calls `write_outputs` once training is done. Every file is
staged first and all are renamed into place together, the lock last.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

from repro.canonical import StagedFiles, atomic_write_bytes, canonical_json, sha256_bytes
from repro.environment.machine import cpu_model
from repro.errors import ConfigError
from repro.filenames import LOCK_NAME, METRICS_NAME, OWN_OUTPUTS, RUN_NAME, STEPS_NAME, WEIGHTS_NAME
from repro.lock import identity, lockfile
from repro.lock.types import Build, FileRecord, Inputs, LossTrajectory, Outputs, Toolchain
from repro.records import BuildFacts, RunRecord


def write_outputs(out_dir: Path, result: Any, inputs: Inputs, build: Build, every: int,
                   started: float, run_facts: BuildFacts) -> tuple[Outputs, bytes, float]:
    """Write weights, metrics, exports, run.json and the lock; return the lock's outputs block and bytes.

    Every file is staged first and all are renamed into place together, the lock
    last: a full disk or a read-only out_dir leaves the earlier outputs as they were.
    """
    from repro.train.step_digests import step_digests_blob
    from repro.train.weights import tensor_records, weights_bytes

    with StagedFiles() as staged:
        exported = write_exports(out_dir, result.exports, staged)
        weights = weights_bytes(result.state)
        staged.add(out_dir / WEIGHTS_NAME, weights)
        logged = [json.dumps({"loss": result.losses[s - 1], "step": s}, sort_keys=True)
                  for s in lockfile.logged_steps(len(result.losses), every)]
        staged.add(out_dir / METRICS_NAME, ("\n".join(logged) + "\n").encode())
        steps_blob = step_digests_blob(result.step_digests)
        staged.add(out_dir / STEPS_NAME, steps_blob)
        outputs: Outputs = {
            "weights": {"path": WEIGHTS_NAME, "size": len(weights),
                        "hashes": {"sha256": sha256_bytes(weights)},
                        "tensors": tensor_records(result.state)},
            "final_loss": result.losses[-1] if result.losses else None,
            "loss_trajectory": loss_trajectory(result.losses, every),
            "metrics": result.metrics,
            "step_digests": {"path": STEPS_NAME, "steps": len(result.step_digests) - 1, "algorithm": "xxh3_128",
                             "sha256": sha256_bytes(steps_blob)},
        }
        # Only tasks with the optional hooks add these, so other locks keep their bytes.
        if exported:
            outputs["files"] = exported
        if result.samples:
            outputs["samples"] = result.samples
        lock_bytes = canonical_json(lockfile.assemble(inputs, build, outputs, toolchain_record()))
        seconds = time.monotonic() - started
        # Machine-incidental facts live here, never in the lock.
        run: RunRecord = {
            "argv": sys.argv, "hostname": socket.gethostname(), "cpu_model": cpu_model(),
            "platform": platform.platform(), "cores": os.cpu_count(), "wall_seconds": round(seconds, 3),
            "finished_unix": int(time.time()), "datasets_fingerprint": result.dataset_fingerprint,
            "python_executable": sys.executable, **run_facts,
        }
        staged.add(out_dir / RUN_NAME, canonical_json(run))
        staged.add(out_dir / LOCK_NAME, lock_bytes)
    return outputs, lock_bytes, seconds


def toolchain_record() -> Toolchain:
    """The lock's `toolchain`: what this process ran, read after training (see repro.environment.toolchain).

    The same record a checkpoint's source identity holds, read before the first step.
    """
    return identity.toolchain_record()


def loss_trajectory(losses: list[float], every: int) -> LossTrajectory:
    """Every `every`-th loss in the lock, and a digest over all of them (float64 LE)."""
    blob = b"".join(struct.pack("<d", v) for v in losses)
    logged = [losses[s - 1] for s in lockfile.logged_steps(len(losses), every)]
    return {"every": every, "steps": len(losses), "losses": logged, "sha256": sha256_bytes(blob)}


def write_exports(out_dir: Path, files: dict[str, bytes], staged: StagedFiles | None = None) -> list[FileRecord]:
    """Write (or stage) a task's exported files beside the weights; return their lock records."""
    for name in files:  # all checked before anything is written
        if name in OWN_OUTPUTS or "/" in name or "\\" in name or name.startswith(".") or not name:
            raise ConfigError(f"task export {name!r}: expected a plain file name other than repro's own outputs")
    records: list[FileRecord] = []
    for name in sorted(files):
        if staged is None:
            atomic_write_bytes(out_dir / name, files[name])
        else:
            staged.add(out_dir / name, files[name])
        digest = sha256_bytes(files[name])
        records.append({"path": name, "size": len(files[name]), "hashes": {"sha256": digest}})
    return records
