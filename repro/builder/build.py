"""One build, in the build child: hash inputs, train, write weights, metrics and lock.

`build(spec)` runs on a `BuildSpec` made once by the launching process
(`repro.builder.launch`), for `repro train` and verify's rebuild alike, so the two
cannot drift apart. It re-reads nothing from the config: the pins, the typed specs,
the data files and `out_dir` are the spec's. Torch is imported only here, in a
process whose environment already holds the pins.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from repro import lifetime
from repro.builder.child import RESULT_NAME, child_message
from repro.builder.error_file import write_error, write_report
from repro.builder.outputs import write_outputs
from repro.builder.result import BuildReport
from repro.builder.spec import BuildSpec
from repro.canonical import sha256_bytes
from repro.environment.pins import RECORDED_PACKAGES, Pins, package_versions, pinned_variables, target_packages
from repro.errors import ReproError, is_write_failure, output_error
from repro.filenames import CHECKPOINTS_DIR
from repro.lock.identity import identify
from repro.lock.inputs_record import hash_inputs
from repro.lock.types import Build, FilesBlock
from repro.pipeline.upstream import upstream_records
from repro.safeio import read_json
from repro.source.base_model import require_consistent, with_base_path
from repro.source.discover import imported_project_files
from repro.source.inputs import code_block, code_include, config_digest, git_state
from repro.source.project_import import importable
from repro.source.targets import check_nodes
from repro.train import checkpoint, distributed
from repro.train.resume import Notify, Session, hold_out_dir
from repro.train.resume import start as start_checkpoints


def child_main(spec_path: str) -> int:
    """Entry point of a build child (`python -m repro.builder SPEC`); returns its exit code.

    The child's environment already holds the pins, so nothing from the parent's
    process or shell (an imported torch, OMP_NUM_THREADS, ...) can reach the
    training. Rank 0's report, or any rank's user-facing failure, goes back in the
    result file beside the spec (`repro.builder.child`).
    """
    from repro.errors import Interrupted

    result = Path(spec_path).with_name(RESULT_NAME)
    try:
        spec = BuildSpec.from_json(read_json(spec_path, "build spec")[0])
        report = build(spec, child_message)
    except (ReproError, Interrupted) as exc:  # a stop signal: the `with` blocks have released out_dir
        return write_error(result, exc)
    except RuntimeError as exc:  # an operator the portable kernels refused: exit 3, naming it
        refused = _refused_operator(exc)
        if refused is None:
            raise
        return write_error(result, refused)
    if report is not None:
        write_report(result, report.to_json())
    return 0


def build(spec: BuildSpec, notify: Notify) -> BuildReport | None:
    """Train from `spec` and write its `out_dir`, the lock last; rank 0 returns the report.

    `out_dir` is locked for the whole build; a run that was interrupted resumes
    from its newest usable checkpoint (see `repro.train.resume`) and ends in the
    same bytes. Other ranks train too but never write to `out_dir`.
    """
    started = time.monotonic()
    # The project's own `_target_`s import through repro's finder, never from `sys.path`; a rebuild's
    # finder serves only the files its lock hashes.
    importable(spec.root, spec.served)
    if spec.gate:  # verify's trust gate, finished on the imported objects before anything runs
        from repro.builder.gate import check_located

        check_located(list(spec.gate), spec.root, spec.served)
    if spec.expect_cpu:  # verify of a native build: the same CPU, or stop before hashing (exit 3)
        from repro.builder.cpu_match import require_same_cpu_here

        require_same_cpu_here(spec.expect_cpu, spec.resolved)
    require_supported(spec.pins)
    # The model, task and optimizer nodes against their constructors, before anything is hashed or trained.
    check_nodes({**spec.resolved, "model": with_base_path(spec.recipe.components.model, spec.root)}, spec.root,
                spec.config.where(spec.root))
    rank, _ = distributed.check_world(spec.pins)
    if rank != 0:
        _build_rank(spec)
        return None
    try:
        with hold_out_dir(spec.out_dir, notify):
            return _build_locked(spec, notify, started)
    except OSError as exc:  # out_dir itself, its lock file: a full disk, no permission, read-only
        if is_write_failure(exc):
            raise output_error(exc) from None
        raise


def finish_code(spec: BuildSpec) -> FilesBlock:
    """`inputs.code` after training: code.include's files, the project config files that were composed
    and every project module the build imported."""
    present = [f for f in spec.config.code if (spec.root / f).is_file()]
    return code_block(spec.root, code_include(spec.resolved), [*imported_project_files(spec.root), *present])


def require_supported(pins: Pins) -> None:
    """Refuse (exit 3) a device, precision or world size this machine cannot honour, before any hashing.

    Runs in the build child, whose environment holds the pins: torch reads ATEN_CPU_CAPABILITY once,
    when imported.
    """
    from repro.train.device import check_supported

    check_supported(pins)


def _build_rank(spec: BuildSpec) -> None:
    """A rank other than 0: wait for rank 0 to settle the checkpoints, then train read-only."""
    from repro.train.loop import train

    distributed.barrier(spec.pins)  # rank 0 has picked (and cleaned up to) the checkpoint to resume from
    ckpt = None
    if spec.resume.mode != "fresh":
        root_dir = spec.out_dir / CHECKPOINTS_DIR
        ckpt = checkpoint.read(spec.resume.source) if spec.resume.source else checkpoint.newest_valid(root_dir)[0]
    # The same identity check as rank 0's, so every rank takes the same decision (rank 0 alone deletes).
    # Only rank 0 hashes the data, and it has compared them with the checkpoint's already.
    data = ckpt.state["identity"]["data"] if ckpt is not None else ""
    config_sha256 = config_digest(spec.resolved)["sha256"]
    session = Session(spec.out_dir / CHECKPOINTS_DIR, replace(spec.checkpoint, every=0), None, resume=ckpt,
                      identify=lambda: identify(spec.resolved, config_sha256, data, spec.pins.to_json(), spec.root),
                      mode=spec.resume.mode, owner=False)
    session.pause_step = None
    train(spec.recipe, checkpoints=session)


def _build_locked(spec: BuildSpec, notify: Notify, started: float) -> BuildReport:
    # A resumed build validates its checkpoint with jsonschema. Import it in every build, so the
    # toolchain (the distributions this process imported, read after training) is the same
    # whether or not the run was resumed.
    import jsonschema  # noqa: F401

    from repro.progress import byte_bar, step_bar

    root, pins = spec.root, spec.pins
    with byte_bar(spec.quiet, "hash data") as bar:
        inputs = hash_inputs(spec.resolved, root, spec.recipe.data, spec.recipe.files.hashed, use_cache=not spec.rehash,
                             progress=bar)
    if "base" in inputs:
        require_consistent(inputs["base"])  # before anything trains on it
    # The records of the stages that made these data, transitively: the chain back to primary sources.
    chain = upstream_records(spec.resolved, root,
                             {f["path"]: f["hashes"]["sha256"] for f in inputs["data"]["files"]})
    if chain:
        inputs["stages"] = chain
    packages = package_versions((*RECORDED_PACKAGES, *target_packages(spec.resolved)))
    session = start_checkpoints(spec.out_dir, spec.checkpoint,
                                {"inputs": inputs, "build": {**pins.to_json(), "packages": packages}},
                                spec.resume, notify,
                                identify=lambda: identify(spec.resolved, inputs["config"]["sha256"],
                                                          inputs["data"]["root_digest"], pins.to_json(), root))
    if pins.world_size > 1:
        distributed.barrier(pins)  # the other ranks now read the same resume point

    from repro.train.loop import train
    with step_bar(spec.recipe.trainer.max_steps, spec.quiet) as on_step:
        # The data were just hashed: their root digest names the datasets cache (no second read).
        result = train(spec.recipe, on_step=on_step, checkpoints=session, data_digest=inputs["data"]["root_digest"])

    inputs["data"]["sample_order"] = {"sha256": result.order_sha256, "count": result.order_count}
    inputs["code"] = finish_code(spec)
    # mypy's extra check: a ** item might hide a `resumes` of another type; pins.to_json() is PinRecord, without one.
    build: Build = {**pins.to_json(), "flags": result.flags.to_json(), "env": pinned_variables(pins),  # type: ignore[typeddict-item]
             "cuda": result.flags.cuda, "cpu": result.flags.cpu}
    resumes = session.lock_resumes()
    if resumes is not None:  # some steps came from another source: the lock says so (docs/lockfile.md)
        build["resumes"] = resumes
    with lifetime.deferred(finish=True):  # a stop signal now would only tear the outputs: finish them
        outputs, lock_bytes, seconds = write_outputs(spec.out_dir, result, inputs, build, spec.recipe.trainer.log_every,
                                                     started, {"git": git_state(root, [f["path"] for f in
                                                                                       inputs["code"]["files"]]),
                                                               **session.report()})
        # The outputs are complete: checkpoints served their purpose, and left here
        # they would end up in whatever tracks out_dir (a DVC output, a release).
        checkpoint.clear(session.root)
    return BuildReport(
        out_dir=spec.out_dir, weights_sha256=outputs["weights"]["hashes"]["sha256"],
        lock_sha256=sha256_bytes(lock_bytes), config_sha256=inputs["config"]["sha256"],
        data_root_digest=inputs["data"]["root_digest"], metrics=result.metrics,
        final_loss=outputs["final_loss"], seconds=seconds,
        resumed_from_step=None if session.resume is None else session.resume.step, samples=tuple(result.samples),
    )


def _refused_operator(exc: RuntimeError) -> ReproError | None:
    if "repro.train.kernels" not in sys.modules:
        return None
    from repro.train.kernels import unportable_error

    return unportable_error(exc)
