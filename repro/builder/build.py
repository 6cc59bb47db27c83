"""One build: resolve pins, hash inputs, train, write weights, metrics and lock.

`repro train` and verify's rebuild both come through `run_build`, so the two
cannot drift apart. Torch is imported only after the pins are in the environment.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from repro import lifetime
from repro.builder.child import child_message, run_child, write_error
from repro.builder.outputs import write_outputs
from repro.environment.pins import (
    RECORDED_PACKAGES,
    Pins,
    check_capability,
    package_versions,
    pinned_variables,
    resolve_pins,
    target_packages,
)
from repro.errors import ConfigError, ReproError, is_write_failure, output_error
from repro.filenames import CHECKPOINTS_DIR, LOCK_NAME, RUN_NAME
from repro.lock import lockfile
from repro.lock.identity import identify
from repro.lock.types import Build, FilesBlock
from repro.pipeline.upstream import upstream_records
from repro.source.base_model import require_consistent, with_base_path
from repro.source.composed import ConfigFiles
from repro.source.config import (
    CheckpointSpec,
    TrainerSpec,
    check_value_types,
    refuse_interpolations,
    require,
    require_keys,
)
from repro.source.data import DataSpec, data_file_list
from repro.source.discover import imported_project_files
from repro.source.inputs import code_block, code_include, config_digest, git_state, hash_inputs
from repro.source.targets import check_nodes
from repro.train import checkpoint, distributed
from repro.train.resume import Notify, ResumeOptions, Session, hold_out_dir
from repro.train.resume import start as start_checkpoints
from repro.trust.release import ReleaseTerms


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


def check_config(resolved: dict[str, Any]) -> None:
    """Every group and key a build reads, checked before anything is hashed or out_dir is locked (exit 2)."""
    require_keys(resolved)
    refuse_interpolations(resolved)
    TrainerSpec.from_config(resolved)
    DataSpec.from_config(resolved)
    CheckpointSpec.from_config(resolved)
    ReleaseTerms.from_config(resolved)  # a malformed licence or data location must not reach the lock


def concrete_pins(resolved: dict[str, Any]) -> tuple[dict[str, Any], Pins]:
    """Resolve `auto`/`native` pins to values and write them back into the config."""
    pins = resolve_pins(require(resolved, "build", dict), require(resolved, "seed", int))
    check_capability(pins.cpu_capability)
    resolved = copy.deepcopy(resolved)
    resolved["build"].update(threads=pins.threads, cpu_capability=pins.cpu_capability)
    return resolved, pins


def finish_code(resolved: dict[str, Any], root: Path, config_files: tuple[str, ...] = ()) -> FilesBlock:
    """`inputs.code` after training: code.include's files, the project config files that were composed
    (`config_files`) and every project module the build imported."""
    present = [f for f in config_files if (root / f).is_file()]
    return code_block(root, code_include(resolved), [*imported_project_files(root), *present])


def project_importable(root: Path, served: dict[str, str] | None = None) -> None:
    """Make the project's own modules importable through repro's finder (`repro.source.project_import`).

    The project's own `_target_`s (mylib.net.TinyNet) then import with no
    PYTHONPATH and no install, and the root never goes on `sys.path`; the files
    they load are discovered and hashed. `served`: a rebuild's files, the only ones
    it may import (a finder installed for this root already is kept).
    """
    from repro.source.project_import import install, installed_for

    if served is not None or installed_for(root) is None:
        install(root, served)


def run_build(resolved: dict[str, Any], root: Path, out_dir: Path, quiet: bool = True,
              resume: ResumeOptions | None = None, notify: Notify | None = None,
              rehash: bool = False, in_child: bool = False, config: ConfigFiles | None = None) -> BuildReport | None:
    """Train from a resolved config and write `out_dir`; the lock is written last.

    The build itself runs in a child process (`repro.builder.child`) whose whole
    environment is an allowlist of the shell plus the pins, so nothing in the
    caller's shell or process can change a bit; `in_child` says we are that child.
    Under an outside launcher (torchrun, accelerate launch) this process is one
    rank, and starts its rank's child the same way: the build process, and with
    it the toolchain the lock records, is the same whoever launched it.
    `out_dir` is locked for the whole build; a run that was interrupted resumes
    from its newest usable checkpoint (see `repro.train.resume`) and ends in the
    same bytes. `rehash=True` reads every data byte rather than trusting the stat
    cache. `config`: the config files that were composed (hashed with the code, and
    named by errors); a rebuild passes the lock's recorded code files instead.
    """
    started = time.monotonic()
    check_value_types(resolved)
    check_config(resolved)
    resolved, pins = concrete_pins(resolved)
    resume = resume or ResumeOptions()
    spec = CheckpointSpec.from_config(resolved)
    require_divisible(resolved, pins)
    if not in_child:
        from repro.source.project_import import refuse_shadowing

        refuse_shadowing(root)  # a root-level json.py would never be imported: say so, before anything runs
        # Under an outside launcher this process is one rank: refuse a wrong count before starting anything.
        rank = distributed.check_world(pins)[0] if distributed.under_launcher() else 0
        source = None if resume.source is None else str(resume.source.resolve())
        with tempfile.TemporaryDirectory(prefix="repro-launch-") as tmp:
            run_child({"resolved": resolved, "root": str(root.resolve()), "out_dir": str(out_dir.resolve()),
                       "resume_mode": resume.mode, "resume_source": source, "rehash": rehash,
                       "config": (config or ConfigFiles()).to_json()}, pins, Path(tmp), quiet=quiet)
        return _report_from(out_dir, started) if rank == 0 else None
    require_supported(pins)
    project_importable(root)
    config = config or ConfigFiles()
    # The model, task and optimizer nodes against their constructors, before anything is hashed or trained.
    check_nodes({**resolved, "model": with_base_path(resolved["model"], root)}, root, config.where(root))
    rank, _ = distributed.check_world(pins)
    if rank != 0:  # other ranks train, but never write to out_dir
        _build_rank(resolved, pins, spec, root, out_dir, resume)
        return None
    try:
        with hold_out_dir(out_dir, notify):
            return _build_locked(resolved, pins, spec, root, out_dir, quiet, resume,
                                 notify or (lambda _msg: None), started, rehash, config.code)
    except OSError as exc:  # out_dir itself, its lock file: a full disk, no permission, read-only
        if is_write_failure(exc):
            raise output_error(exc) from None
        raise


def require_supported(pins: Pins) -> None:
    """Refuse (exit 3) a device, precision or world size this machine cannot honour, before any hashing.

    Runs in the build child, whose environment holds the pins: torch reads ATEN_CPU_CAPABILITY once,
    when imported.
    """
    from repro.train.device import check_supported

    check_supported(pins)


def require_divisible(resolved: dict[str, Any], pins: Pins) -> None:
    """Each rank takes an equal, contiguous slice of every global batch."""
    batch = require(resolved, "trainer.batch_size", int)
    if batch % pins.world_size:
        raise ConfigError(f"trainer.batch_size={batch} is not divisible by build.world_size={pins.world_size}: "
                          "every rank takes an equal slice of the global batch")


def _build_rank(resolved: dict[str, Any], pins: Pins, spec: CheckpointSpec, root: Path, out_dir: Path,
                resume: ResumeOptions) -> None:
    """A rank other than 0: wait for rank 0 to settle the checkpoints, then train read-only."""
    from repro.train.loop import train

    files = data_file_list(root, DataSpec.from_config(resolved))
    distributed.barrier(pins)  # rank 0 has picked (and cleaned up to) the checkpoint to resume from
    ckpt = None
    if resume.mode != "fresh":
        root_dir = out_dir / CHECKPOINTS_DIR
        ckpt = checkpoint.read(resume.source) if resume.source else checkpoint.newest_valid(root_dir)[0]
    # The same identity check as rank 0's, so every rank takes the same decision (rank 0 alone deletes).
    # Only rank 0 hashes the data, and it has compared them with the checkpoint's already.
    data = ckpt.state["identity"]["data"] if ckpt is not None else ""
    config_sha256 = config_digest(resolved)["sha256"]
    session = Session(out_dir / CHECKPOINTS_DIR, replace(spec, every=0), None, resume=ckpt,
                      identify=lambda: identify(resolved, config_sha256, data, pins.to_json(), root), mode=resume.mode,
                      owner=False)
    session.pause_step = None
    train(resolved, pins, root, files, checkpoints=session)


def _report_from(out_dir: Path, started: float) -> BuildReport:
    """The report of a build that ranks wrote, read back from its lock."""
    raw = (out_dir / LOCK_NAME).read_bytes()
    lock = lockfile.read(out_dir / LOCK_NAME)
    run = json.loads((out_dir / RUN_NAME).read_text(encoding="utf-8"))
    resumed = run.get("resumed_from")
    return BuildReport(
        out_dir=out_dir, weights_sha256=lock["outputs"]["weights"]["hashes"]["sha256"],
        lock_sha256=hashlib.sha256(raw).hexdigest(), config_sha256=lock["inputs"]["config"]["sha256"],
        data_root_digest=lock["inputs"]["data"]["root_digest"], metrics=lock["outputs"]["metrics"],
        final_loss=lock["outputs"]["final_loss"], seconds=time.monotonic() - started,
        resumed_from_step=None if not resumed else int(resumed["step"]),
        samples=tuple(lock["outputs"].get("samples", [])),
    )


def _build_locked(resolved: dict[str, Any], pins: Pins, spec: CheckpointSpec, root: Path, out_dir: Path,
                  quiet: bool, resume: ResumeOptions, notify: Notify, started: float, rehash: bool,
                  config_code: tuple[str, ...]) -> BuildReport:
    # A resumed build validates its checkpoint with jsonschema. Import it in every build, so the
    # toolchain (the distributions this process imported, read after training) is the same
    # whether or not the run was resumed.
    import jsonschema  # noqa: F401

    from repro.progress import byte_bar, step_bar

    with byte_bar(quiet, "hash data") as bar:
        inputs = hash_inputs(resolved, root, use_cache=not rehash, progress=bar)
    if "base" in inputs:
        require_consistent(inputs["base"])  # before anything trains on it
    # The records of the stages that made these data, transitively: the chain back to primary sources.
    chain = upstream_records(resolved, root, {f["path"]: f["hashes"]["sha256"] for f in inputs["data"]["files"]})
    if chain:
        inputs["stages"] = chain
    files = data_file_list(root, DataSpec.from_config(resolved))
    packages = package_versions((*RECORDED_PACKAGES, *target_packages(resolved)))
    session = start_checkpoints(out_dir, spec, {"inputs": inputs, "build": {**pins.to_json(), "packages": packages}},
                                resume, notify, identify=lambda: identify(resolved, inputs["config"]["sha256"],
                                                                          inputs["data"]["root_digest"],
                                                                          pins.to_json(), root))
    if pins.world_size > 1:
        distributed.barrier(pins)  # the other ranks now read the same resume point

    from repro.train.loop import train
    every = require(resolved, "trainer.log_every", int)
    with step_bar(require(resolved, "trainer.max_steps", int), quiet) as on_step:
        # The data were just hashed: their root digest names the datasets cache (no second read).
        result = train(resolved, pins, root, files, on_step=on_step, checkpoints=session,
                       data_digest=inputs["data"]["root_digest"])

    inputs["data"]["sample_order"] = {"sha256": result.order_sha256, "count": result.order_count}
    inputs["code"] = finish_code(resolved, root, config_code)
    # mypy's extra check: a ** item might hide a `resumes` of another type; pins.to_json() is PinRecord, without one.
    build: Build = {**pins.to_json(), "flags": result.flags.to_json(), "env": pinned_variables(pins),  # type: ignore[typeddict-item]
             "cuda": result.flags.cuda, "cpu": result.flags.cpu}
    resumes = session.lock_resumes()
    if resumes is not None:  # some steps came from another source: the lock says so (docs/lockfile.md)
        build["resumes"] = resumes
    with lifetime.deferred(finish=True):  # a stop signal now would only tear the outputs: finish them
        outputs, lock_bytes, seconds = write_outputs(out_dir, result, inputs, build, every, started, {
            "git": git_state(root, [f["path"] for f in inputs["code"]["files"]]), **session.report()})
        # The outputs are complete: checkpoints served their purpose, and left here
        # they would end up in whatever tracks out_dir (a DVC output, a release).
        checkpoint.clear(session.root)
    return BuildReport(
        out_dir=out_dir, weights_sha256=outputs["weights"]["hashes"]["sha256"],
        lock_sha256=hashlib.sha256(lock_bytes).hexdigest(), config_sha256=inputs["config"]["sha256"],
        data_root_digest=inputs["data"]["root_digest"], metrics=result.metrics,
        final_loss=outputs["final_loss"], seconds=seconds,
        resumed_from_step=None if session.resume is None else session.resume.step, samples=tuple(result.samples),
    )


def rebuild_main(spec_path: str) -> int:
    """Entry point of a build child (`repro.builder.child.run_child`); returns its exit code.

    The child's environment already holds the pins, so nothing from the parent's
    process or shell (an imported torch, OMP_NUM_THREADS, ...) can reach the
    training. The spec file names the resolved config, the project root, the
    out_dir and resume options; a user-facing failure goes back through `write_error`.
    """
    from repro.errors import Interrupted

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    source = spec.get("resume_source")
    options = ResumeOptions(mode=spec.get("resume_mode", "auto"), source=None if source is None else Path(source))
    try:
        served = spec.get("served")
        project_importable(Path(spec["root"]), None if served is None else {str(k): str(v) for k, v in served.items()})
        if spec.get("gate"):  # verify's trust gate, finished on the imported objects before anything runs
            from repro.builder.gate import check_located

            check_located([(str(p), str(t), str(k)) for p, t, k in spec["gate"]], Path(spec["root"]), served)
        if spec.get("expect_cpu"):  # verify of a native build: the same CPU, or stop before hashing (exit 3)
            from repro.builder.cpu_match import require_same_cpu_here

            require_same_cpu_here(spec["expect_cpu"], spec["resolved"])
        run_build(spec["resolved"], Path(spec["root"]), Path(spec["out_dir"]), quiet=bool(spec["quiet"]),
                  resume=options, rehash=bool(spec.get("rehash", False)), notify=child_message, in_child=True,
                  config=ConfigFiles.from_json(spec.get("config")))
    except (ReproError, Interrupted) as exc:  # a stop signal: the `with` blocks have released out_dir
        return write_error(spec, exc)
    except RuntimeError as exc:  # an operator the portable kernels refused: exit 3, naming it
        refused = _refused_operator(exc)
        if refused is None:
            raise
        return write_error(spec, refused)
    return 0


def _refused_operator(exc: RuntimeError) -> ReproError | None:
    if "repro.train.kernels" not in sys.modules:
        return None
    from repro.train.kernels import unportable_error

    return unportable_error(exc)
