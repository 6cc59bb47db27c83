"""`verify`: the checks in order (see the package's docstring), and the project root a lock is checked under."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from repro.builder import gate
from repro.builder.cpu_match import require_same_cpu
from repro.environment.pins import check_bounds
from repro.errors import ConfigError, DataError, LockfileError, UserInputError
from repro.lock import lockfile
from repro.lock.explain import hints
from repro.lock.lockdiff import Difference, compare_inputs
from repro.lock.types import Lock
from repro.pipeline.dvc_lineage import explain_lineage
from repro.safeio import open_regular, printable
from repro.source.enclosing import enclosing_folders
from repro.source.inputs import PACKAGE_DIR
from repro.source.project_import import refuse_shadowing
from repro.verify.checks import (
    check_weights_file,
    explain_config,
    machine_check,
    pin_consistency,
    rehash_inputs,
    resume_notes,
    toolchain_check,
)
from repro.verify.rebuild_compare import rebuild_and_compare
from repro.verify.report import NOTE_KINDS, VerifyOptions, VerifyReport, write_record
from repro.verify.stage_checks import check_stages


def verify(opts: VerifyOptions) -> VerifyReport:
    """Run the checks in order; raise for exit 2/3, return a report for 0/1."""
    if opts.signing_key is not None and opts.record and not opts.inputs_only:
        from repro.trust.attestation import signing_key

        signing_key(opts.signing_key)  # a bad key is named now, not after the rebuild
    lock, lock_sha256 = lockfile.load(opts.lock_path)  # one read: the digest describes the bytes checked
    if not opts.inputs_only:
        require_same_cpu(lock)  # a native build from another CPU: exit 3 now, not after hashing and training
    try:
        root, root_source = find_root(opts.lock_path, lock, opts.root)
    except UserInputError:
        if not (opts.inputs_only and opts.weights is not None):
            raise
        return weights_only(lock, opts)  # a download: the lock and the weights, no project around them
    phases = 1 if opts.inputs_only else 2
    report = check_source(lock, root, root_source, opts)
    c = report.checked
    opts.say(f"source under {root}: {c['data_files']} data file(s), {c['code_files']} code file(s), "
             f"{len(lock['inputs'].get('stages', []))} stage record(s) re-hashed: "
             + ("as the lock records them" if report.identical else f"{len(report.differences)} difference(s)"),
             1, phases)
    # Only inputs and pins can make a rebuild pointless; a bad weights file cannot.
    rebuilding = not opts.inputs_only and (report.identical or opts.rebuild_anyway)
    weights_path = check_weights(report, lock, opts)
    plan: gate.Plan = []
    if rebuilding:  # before anything from the lock is imported or started
        refuse_shadowing(root)
        # Library classes are checked by the rebuild child itself, unless another toolchain's repro runs it.
        reviewed = gate.check(lock, root, opts.trust_code, defer_libraries=opts.toolchain != "recreate")
        report.checked["trusted_anyway"] = [t.line() for t in reviewed if not t.trusted and not t.deferred]
        plan = gate.child_plan(reviewed, opts.trust_code)
        check_bounds(lock["build"]["threads"], opts.world_size or lock["build"]["world_size"],
                     opts.allow_oversubscribe)
    report.notes += machine_check(lock, rebuilding)
    if opts.world_size is not None and opts.world_size != lock["build"]["world_size"]:
        report.notes.append(Difference(
            "build", "pin", "world_size", "changed", lock["build"]["world_size"], opts.world_size,
            "rebuilding with another world size: the global batch is split differently and gradients are "
            "reduced in another order, so the result is not expected to be bit-identical"))
    if rebuilding:
        steps = lock["outputs"]["loss_trajectory"]["steps"]
        opts.say(f"rebuilding {steps} steps in a fresh process under the lock's pins", 1, phases)
        report.rebuild = rebuild = rebuild_and_compare(lock, root, opts, weights_path, report, plan)
        same = "bit-identical" if report.identical else f"{len(report.differences)} difference(s)"
        opts.say(f"rebuilt in {rebuild['seconds']:.1f} s: {same}", 2, phases)
        if opts.record:
            report.record = write_record(report, rebuild, opts, lock_sha256)
    elif not opts.inputs_only:
        report.rebuild = {"performed": False,
                          "reason": "skipped: the lock's inputs already differ (--rebuild-anyway rebuilds regardless)"}
    report.hints = hints(report.differences, report.notes, lock, built_at_commit(opts.lock_path),
                         built_here(opts.lock_path))
    return report


def weights_only(lock: Lock, opts: VerifyOptions) -> VerifyReport:
    """`--inputs-only --weights FILE` where no project holds the lock's data: check the weights alone, and
    say that the source was not checked (a downloaded release: the lock and its weights)."""
    report = VerifyReport(str(opts.lock_path), "", "none: no folder here holds the lock's data",
                          "weights-only", {"weights_file": None})
    check_weights(report, lock, opts)
    report.hints = hints(report.differences, report.notes, lock)
    opts.say("weights checked against the lock; the source was not (no project here)", 1, 1)
    return report


def check_source(lock: Lock, root: Path, root_source: str, opts: VerifyOptions) -> VerifyReport:
    """The report's first findings: the source re-hashed under `root`, the toolchain, the pins, lineage."""
    mode = "inputs-only" if opts.inputs_only else "rebuild"
    with _naming(opts.lock_path):  # the lock's config is read here: its errors name the lock
        found, checked = rehash_inputs(lock, root, opts.quiet)
        report = VerifyReport(str(opts.lock_path), str(root), root_source, mode, checked,
                              base=lock["inputs"].get("base"))
        for d in compare_inputs(lock["inputs"], found):
            (report.notes if d.kind in NOTE_KINDS else report.differences).append(d)
        stage_diffs, stage_notes = check_stages(lock, root)  # the code and inputs behind the data
        report.differences += stage_diffs
        report.notes += stage_notes + toolchain_check(lock["toolchain"]) + resume_notes(lock)
        report.differences = explain_config(report.differences, lock, root) + pin_consistency(lock)
    report.differences = explain_lineage(report.differences, root)  # a tokenizer made from a changed corpus
    return report


def check_weights(report: VerifyReport, lock: Lock, opts: VerifyOptions) -> Path | None:
    """Check `--weights FILE`, or the weights beside the lock when a rebuild is asked for; the file checked."""
    weights_path = opts.weights
    beside = opts.lock_path.parent / lock["outputs"]["weights"]["path"]
    if weights_path is None and not opts.inputs_only and os.path.lexists(beside):
        weights_path = beside
    if weights_path is not None:
        # A file the user named may be a link; one found beside a stranger's lock may not, nor may any folder
        # on the way to it (out/sub -> /elsewhere): it is opened beneath the lock's folder, no link followed.
        # Either way the file is hashed (and its tensors read) through the descriptor checked here.
        if opts.weights is None:
            fd, _ = open_regular(lock["outputs"]["weights"]["path"], "weights file", DataError,
                                 root=opts.lock_path.parent)
        else:
            fd, _ = open_regular(weights_path, "weights file", DataError, follow_links=True)
        try:
            report.differences += check_weights_file(weights_path, lock["outputs"]["weights"], fd=fd)
        finally:
            os.close(fd)
        report.checked["weights_file"] = str(weights_path)
    return weights_path


@contextmanager
def _naming(lock_path: Path) -> Iterator[None]:
    """Prefix config errors raised while interpreting a lock's config with the lock's path."""
    try:
        yield
    except (ConfigError, LockfileError) as exc:
        raise type(exc)(f"{printable(str(lock_path))}: {exc}") from None


def built_at_commit(lock_path: Path) -> str | None:
    """The git commit the build ran at, from run.json beside the lock (not in the lock:
    a lock committed to git cannot name the commit that holds it). None if unknown."""
    from repro.trust.model_card import build_commit

    git = build_commit(lock_path.parent)
    return None if git is None else str(git["commit"])


def built_here(lock_path: Path) -> bool | None:
    """Whether this machine built the lock: run.json beside it names this host and CPU model (None: unknown).

    Read before the hint names a CPU: on the machine that built the lock, the CPU is never the cause.
    """
    import socket

    from repro.environment.machine import cpu_model
    from repro.errors import ReproError
    from repro.filenames import RUN_NAME
    from repro.safeio import read_json

    path = lock_path.parent / RUN_NAME
    if not os.path.lexists(path):
        return None
    try:
        run, _ = read_json(path, RUN_NAME)  # a link, FIFO or device is refused, never read
    except ReproError:
        return None
    if not isinstance(run, dict) or not isinstance(run.get("hostname"), str) or not run.get("cpu_model"):
        return None
    return bool(run["hostname"] == socket.gethostname() and run["cpu_model"] == cpu_model())


def find_root(lock_path: Path, lock: Lock, explicit: Path | None) -> tuple[Path, str]:
    """The folder the lock's relative data and code paths are resolved against.

    `--root` if given; else the first of these that holds one of the lock's data
    files: the git repository holding the lockfile, the nearest folder above the
    lockfile (a project inside a larger repository), the folder holding the
    installed repro package (the embedded example's data ships there). If none
    does, the git repository (the missing file is then named), else an error.
    Only existence is tested here; nothing is read.
    """
    if explicit is not None:
        if not explicit.is_dir():
            raise UserInputError(f"--root {printable(str(explicit))}: not a directory")
        return explicit.resolve(), "--root"
    # Never above the git top level, nor above the lock's own folder outside git.
    above, top = enclosing_folders(lock_path.resolve().parent)
    data = [f["path"] for f in lock["inputs"]["data"]["files"]]

    def holds_data(folder: Path) -> bool:
        return any((folder / p).is_file() for p in data)

    if top is not None and holds_data(top):
        return top, "the git repository holding the lockfile"
    for folder in above:
        if holds_data(folder):
            return folder, "the nearest folder above the lockfile holding its data"
    if holds_data(PACKAGE_DIR.parent):
        return PACKAGE_DIR.parent, "the folder holding the installed repro package"
    if top is not None:
        return top, "the git repository holding the lockfile"
    first = printable(data[0]) if data else "its data"
    raise UserInputError(f"{printable(str(lock_path))}: cannot tell the project root: the lockfile's folder does "
                         f"not hold {first} and it is not in a git repository; pass --root DIR")

