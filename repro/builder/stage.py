"""Run one stage: hash first, run under the pins, check what it wrote, move it into place, record.

In order, for `repro run NAME` and for `repro verify --from-source`:

1. hash the declared inputs (parent process), before anything runs;
2. in a fresh child process under the pinned environment: import the stage's
   module, hash the code it brought in (every module now loaded from under the
   project root, plus `code` patterns) and the distributions it imported, write
   those digests down, seed, and only then call the function;
3. refuse a declared output that was not written, or any file written, changed
   or deleted under the project root that is not a declared output;
4. move each output into place atomically, then write the stage record last.

The function is called as `target(inputs=[Path...], outputs=[Path...], **params)`;
the output paths point into a staging folder, so a failing stage leaves no
half-written outputs behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

from repro.builder.child import child_environ, child_error, raise_interrupted
from repro.canonical import atomic_write_json, fsync_dir
from repro.environment.pins import Pins
from repro.errors import DataError, ReproError
from repro.filenames import STAGING_DIR
from repro.lifetime import supervise
from repro.lock import stagerecord
from repro.lock.lockdiff import Difference, compare_stage_records
from repro.records import FilesBlock, StagePins, StageRecord, StageToolchain
from repro.safeio import open_beneath
from repro.source.filetree import SKIP_DIRS
from repro.source.inputs import files_block
from repro.source.stages import StageSpec
from repro.source.walk import expand_patterns

# `python -P -c`: the current folder (the root) is never put on sys.path (`-P`, Python 3.11+), so nothing
# at the root can stand in for repro or a library it imports.
_CHILD = "import sys; from repro.builder.stage_child import main; sys.exit(main(sys.argv[1]))"
# Folders that are never a stage's business: tool caches and virtual environments.
_NOT_WATCHED = frozenset({*SKIP_DIRS, "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".venv"})

# (size, mtime_ns, inode) of every file under the root, by path: what a stage must not change.
TreeState = dict[str, tuple[int, int, int]]


class Prestart(TypedDict):
    """What the stage child hashed after importing the stage's code and before calling it."""

    code: FilesBlock
    toolchain: StageToolchain


@dataclass(frozen=True)
class StageReport:
    """What one run of a stage did, for the CLI and for verify --from-source."""

    name: str
    record_path: Path
    record: StageRecord
    seconds: float
    changes: list[Difference]  # against the record that was there before (None there: first run)
    first_run: bool


# A stage records these pins (its threads, CPU level, seed and MKL reproducibility mode); every other
# pin is the same for every stage. A stage is a plain function, not a training: one CPU process that
# loads none of repro's portable kernels, so one that computes with torch runs torch's own (vendor)
# kernels under the recorded MKL mode. Together the two name every pin once (tests/test_single_source.py).
STAGE_RECORDED = ("threads", "cpu_capability", "seed", "mkl_cbwr")
STAGE_FIXED: dict[str, Any] = {"profile": "native", "device": "cpu", "precision": "fp32", "world_size": 1,
                               "deterministic": True, "mkldnn": True, "kernels": "vendor", "unportable": "record"}


def stage_pins(pins: Pins) -> StagePins:
    """The pins a stage runs under and records (`STAGE_RECORDED`)."""
    return cast(StagePins, {key: getattr(pins, key) for key in STAGE_RECORDED})


def run_stage(spec: StageSpec, pins: StagePins, root: Path, *, use_cache: bool = True,
              quiet: bool = True, served: Mapping[str, str] | None = None, sandbox: bool = False) -> StageReport:
    """Run `spec` under `root` with these stage pins and write its outputs and record.

    `served`: the only project files the stage may import, with their digests (a stage run
    again from its record); `sandbox`: run it in the rebuild's sandbox (repro.builder.sandbox).
    """
    from repro.source.project_import import refuse_shadowing

    started = time.monotonic()
    root = root.resolve()
    refuse_shadowing(root)
    inputs = _hash_inputs(spec, root, use_cache)
    (root / STAGING_DIR).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=root / STAGING_DIR))
    try:
        before = tree_state(root)
        prestart = _spawn(spec, pins, root, staging, quiet, served, sandbox)
        # Code was loaded before the call and hashed then: an edit during the run changed nothing that ran.
        loaded = {f["path"] for f in prestart["code"]["files"]}
        _check_writes(spec, root, before, tree_state(root), loaded)
        outputs = _collect(spec, staging)
        record = stagerecord.assemble(spec, pins, inputs, prestart["code"], prestart["toolchain"], outputs)
        previous = _previous(root / spec.record)
        for rel in spec.outputs:
            _move_into_place(staging / rel, root / rel)
        stagerecord.write(root / spec.record, record)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    changes = [] if previous is None else compare_stage_records(previous, record)
    return StageReport(spec.name, root / spec.record, record, time.monotonic() - started, changes, previous is None)


def _hash_inputs(spec: StageSpec, root: Path, use_cache: bool) -> FilesBlock:
    from repro.source.hashcache import open_cache

    files = expand_patterns(root, spec.inputs) if spec.inputs else []
    for rel in files:
        if rel in spec.outputs:
            raise DataError(f"{rel}: stage {spec.name} lists it both as an input and as an output")
    with open_cache(root) as cache:
        return files_block(root, files, cache=cache, rehash=not use_cache)


def _spawn(spec: StageSpec, pins: StagePins, root: Path, staging: Path, quiet: bool,
           served: Mapping[str, str] | None, sandbox: bool) -> Prestart:
    """Run the stage in a fresh interpreter under the pins; return the digests it took before calling."""
    prestart, error = staging.parent / f"{staging.name}.prestart.json", staging.parent / f"{staging.name}.error.json"
    job = {"name": spec.name, "target": spec.target, "params": spec.params, "root": str(root),
           "inputs": expand_patterns(root, spec.inputs) if spec.inputs else [],
           "outputs": [str(staging / rel) for rel in spec.outputs], "code": list(spec.code), "seed": pins["seed"],
           "prestart_path": str(prestart), "error_path": str(error),
           "served": None if served is None else dict(served)}
    for rel in spec.outputs:  # the stage writes plain paths; their folders are ready
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
    job_path = staging.parent / f"{staging.name}.job.json"
    atomic_write_json(job_path, job)
    # The one environment rule for build children: an allowlist plus these pins, on the CPU.
    env = child_environ(as_pins(pins), staging.parent)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a __pycache__ under the root is a write, and not an output
    prefix: tuple[str, ...] = ()
    if sandbox:  # the project read-only; only the staging folder (and its job files beside it) writable
        from repro.builder.sandbox import sandbox_for

        prefix = sandbox_for(root, staging.parent, 1).prefix
    # What the stage prints goes to stderr: stdout is the command's result (one JSON object with --json).
    try:
        # It dies with this process, and a stop signal here is forwarded to it (repro.lifetime).
        done = supervise([*prefix, sys.executable, "-P", "-c", _CHILD, str(job_path)], cwd=root, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL if quiet else sys.stderr)
        if done.code != 0:
            raise_interrupted(done, error, f"stage {spec.name}")
            raise child_error(done.code, error, "", as_pins(pins), f"stage {spec.name}")
        loaded: Prestart = json.loads(prestart.read_text(encoding="utf-8"))
        return loaded
    finally:
        for p in (job_path, prestart, error):
            p.unlink(missing_ok=True)


def as_pins(pins: StagePins) -> Pins:
    """A stage's recorded pins as the build pins the child environment is made from (`STAGE_FIXED` for the rest)."""
    return Pins(**{**STAGE_FIXED, **{key: value for key, value in pins.items() if key in STAGE_RECORDED}})


def tree_state(root: Path) -> TreeState:
    """(size, mtime_ns, inode) of every file under root, skipping tool caches and virtual environments."""
    state: TreeState = {}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(root / rel_dir if rel_dir else root))
        except OSError:
            continue
        if any(e.name == "pyvenv.cfg" for e in entries) and rel_dir:
            continue
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            if e.is_dir(follow_symlinks=False):
                if e.name not in _NOT_WATCHED:
                    stack.append(rel)
            else:
                st = e.stat(follow_symlinks=False)
                state[rel] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return state


def _check_writes(spec: StageSpec, root: Path, before: TreeState, after: TreeState,
                  loaded_code: set[str]) -> None:
    """Nothing under the root may change except through the declared outputs (which go to staging)."""
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p) and p not in loaded_code)
    if changed:
        what = "created" if changed[0] not in before else "deleted" if changed[0] not in after else "changed"
        raise DataError(f"{changed[0]}: stage {spec.name} {what} it, but it is not one of its outputs "
                        f"{list(spec.outputs)}; write only to the `outputs` paths it is given")


def _collect(spec: StageSpec, staging: Path) -> FilesBlock:
    """The staged outputs' digests; a missing or an undeclared file is an error naming it.

    Each output must be a regular file reached without a link (repro.safeio.open_beneath): a
    stage from a stranger's record could leave a link to a file outside, to be hashed and moved
    into the project.
    """
    for rel in spec.outputs:
        if not os.path.lexists(staging / rel):
            raise DataError(f"{rel}: stage {spec.name} did not write this declared output")
        os.close(open_beneath(staging, rel, f"output of stage {spec.name}", DataError)[0])
    extra = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*")
                   if p.is_file() and p.relative_to(staging).as_posix() not in spec.outputs)
    if extra:
        raise DataError(f"{extra[0]}: stage {spec.name} wrote it, but it is not one of its outputs "
                        f"{list(spec.outputs)}")
    return files_block(staging, list(spec.outputs))


def _move_into_place(staged: Path, final: Path) -> None:
    with open(staged, "rb") as fh:  # the stage wrote it; make it durable before it gets its name
        os.fsync(fh.fileno())
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    fsync_dir(final.parent)


def _previous(path: Path) -> StageRecord | None:
    """The record an earlier run left, if it is readable; a broken one is simply replaced."""
    try:
        return stagerecord.read(path) if path.is_file() else None
    except ReproError:
        return None
