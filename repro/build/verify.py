"""Check a lockfile against this machine: inputs first, then a pinned rebuild.

Cheapest and most fundamental checks come first, so a wrong data file is named
in seconds instead of after a training run:

1. read and validate the lock, find the project root (unusable: exit 2);
2. re-hash the source (data, the recorded project code, the config) and check
   that the lock's build pins agree with its config; compare the recorded
   toolchain with this one (notes, not mismatches); no torch is imported up to here;
3. check a weights file: `--weights FILE`, or the one beside the lock;
4. check this machine can honour the pins: the CPU level (exit 3);
5. rebuild in a fresh process under the pins, and compare the rebuilt lock with
   the lock: pins, loss trajectory, every tensor, and the toolchain it ran with.

Source and toolchain are told apart (docs/verify.md): a differing source is a
mismatch (exit 1); a differing toolchain is a note when the bits agree, and the
likely cause (exit 3) when they do not.

Everything that differs is a `repro.lock.diff.Difference`, the vocabulary `repro diff`
uses too. Only `repro.commands.verify` prints.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from repro import __version__
from repro.build import gate
from repro.build.checks import (
    built_at_commit,
    check_weights_file,
    count_elements,
    explain_config,
    find_root,
    machine_check,
    pin_consistency,
    rehash_inputs,
    toolchain_check,
)
from repro.build.localize import name_first_step
from repro.build.rebuild import run_rebuild
from repro.build.sandbox import sandbox_for
from repro.environment.pins import check_bounds
from repro.errors import ConfigError, LockfileError, UserInputError
from repro.filenames import LOCK_NAME
from repro.lock import lockfile
from repro.lock.diff import (
    Difference,
    compare_inputs,
    compare_locks,
)
from repro.lock.explain import hints
from repro.lock.lineage import explain_lineage
from repro.lock.types import Lock
from repro.safeio import printable

REPORT_VERSION = 2
# Differences that describe where and with what a build ran, not what it is.
NOTE_KINDS = ("cuda",)
# The source: a difference here is a mismatch whatever the toolchain did (exit 1).
SOURCE_KINDS = ("data", "code", "config", "preprocess")
TOOLCHAIN_EXIT = 3


@dataclass(frozen=True)
class VerifyOptions:
    """What `repro verify` was asked to do; defaults are the command's defaults."""

    lock_path: Path
    root: Path | None = None
    inputs_only: bool = False
    weights: Path | None = None
    work_dir: Path | None = None
    allow_env_drift: bool = False  # accepted for old scripts: toolchain drift never stops a rebuild now
    rebuild_anyway: bool = False
    quiet: bool = True
    record: bool = True  # after a rebuild, leave verification.json beside the lock (repro audit reads it)
    signing_key: Path | None = None
    world_size: int | None = None  # rebuild with this many processes instead of the lock's
    toolchain: str = "current"  # or "recreate": rebuild in a fresh environment holding the lock's toolchain
    find_links: tuple[Path, ...] = ()  # wheel folders for --toolchain recreate (an unreleased repro)
    trust_code: bool = False  # run `_target_`s outside the trusted set (repro.build.gate)
    allow_oversubscribe: bool = False  # rebuild with more threads than OVERSUBSCRIBE x this machine's cores
    sandbox: bool = True  # network off, project read-only, where the machine allows it (repro.build.sandbox)
    localize: bool = False  # on a mismatch, name the first differing op where the lock's machine can be emulated


@dataclass
class VerifyReport:
    """Everything verify found. `differences` decide the exit code; `notes` do not."""

    lockfile: str
    root: str
    root_source: str
    mode: str
    checked: dict[str, Any]
    differences: list[Difference] = field(default_factory=list)
    notes: list[Difference] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    rebuild: dict[str, Any] | None = None
    record: dict[str, Any] | None = None

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def toolchain_drift(self) -> list[Difference]:
        return [d for d in self.notes if d.section == "toolchain"]

    @property
    def toolchain_caused(self) -> bool:
        """Bits differ, the source does not, and the toolchain does: the likely cause (exit 3)."""
        source = any(d.section == "inputs" and d.kind in SOURCE_KINDS for d in self.differences)
        return bool(self.differences) and not source and bool(self.toolchain_drift)

    @property
    def exit_code(self) -> int:
        return 0 if self.identical else TOOLCHAIN_EXIT if self.toolchain_caused else 1

    @property
    def result(self) -> str:
        return "identical" if self.identical else "toolchain-mismatch" if self.toolchain_caused else "mismatch"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION, "repro": __version__,
            "result": self.result, "exit_code": self.exit_code,
            "lockfile": self.lockfile, "root": self.root, "root_source": self.root_source, "mode": self.mode,
            "checked": self.checked, "differences": [d.to_json() for d in self.differences],
            "notes": [d.to_json() for d in self.notes], "hints": self.hints, "rebuild": self.rebuild,
            "record": self.record,
        }


def verify(opts: VerifyOptions) -> VerifyReport:
    """Run the checks in order; raise for exit 2/3, return a report for 0/1."""
    if opts.signing_key is not None and opts.record and not opts.inputs_only:
        from repro.trust.attestation import signing_key

        signing_key(opts.signing_key)  # a bad key is named now, not after the rebuild
    lock, lock_sha256 = lockfile.load(opts.lock_path)  # one read: the digest describes the bytes checked
    root, root_source = find_root(opts.lock_path, lock, opts.root)
    mode = "inputs-only" if opts.inputs_only else "rebuild"
    with _naming(opts.lock_path):  # the lock's config is read here: its errors name the lock
        found, checked = rehash_inputs(lock, root, opts.quiet)
        report = VerifyReport(str(opts.lock_path), str(root), root_source, mode, checked)
        for d in compare_inputs(lock["inputs"], found):
            (report.notes if d.kind in NOTE_KINDS else report.differences).append(d)
        report.notes += toolchain_check(lock["toolchain"])
        report.differences = explain_config(report.differences, lock, root) + pin_consistency(lock)
    report.differences = explain_lineage(report.differences, root)  # a tokenizer made from a changed corpus
    # Only inputs and pins can make a rebuild pointless; a bad weights file cannot.
    rebuilding = not opts.inputs_only and (report.identical or opts.rebuild_anyway)

    weights_path = opts.weights
    beside = opts.lock_path.parent / lock["outputs"]["weights"]["path"]
    if weights_path is None and not opts.inputs_only and os.path.lexists(beside):
        weights_path = beside
    if weights_path is not None:
        # A file the user named may be a link; one found beside a stranger's lock may not.
        report.differences += check_weights_file(weights_path, lock["outputs"]["weights"],
                                                 follow_links=opts.weights is not None)
        report.checked["weights_file"] = str(weights_path)

    if rebuilding:  # before anything from the lock is imported or started
        reviewed = gate.check(lock, opts.trust_code)
        report.checked["trusted_anyway"] = [t.line() for t in reviewed if not t.trusted]
        check_bounds(lock["build"]["threads"], opts.world_size or lock["build"]["world_size"],
                     opts.allow_oversubscribe)
    report.notes += machine_check(lock, rebuilding)
    if opts.world_size is not None and opts.world_size != lock["build"]["world_size"]:
        report.notes.append(Difference(
            "build", "pin", "world_size", "changed", lock["build"]["world_size"], opts.world_size,
            "rebuilding with another world size: the global batch is split differently and gradients are "
            "reduced in another order, so the result is not expected to be bit-identical"))
    if rebuilding:
        report.rebuild = rebuild = _rebuild_and_compare(lock, root, opts, weights_path, report)
        if opts.record:
            report.record = write_record(report, rebuild, opts, lock_sha256)
    elif not opts.inputs_only:
        report.rebuild = {"performed": False,
                          "reason": "skipped: the lock's inputs already differ (--rebuild-anyway rebuilds regardless)"}
    report.hints = hints(report.differences, report.notes, lock, built_at_commit(opts.lock_path))
    return report


@contextmanager
def _naming(lock_path: Path) -> Iterator[None]:
    """Prefix config errors raised while interpreting a lock's config with the lock's path."""
    try:
        yield
    except (ConfigError, LockfileError) as exc:
        raise type(exc)(f"{printable(str(lock_path))}: {exc}") from None


def _rebuild_and_compare(lock: Lock, root: Path, opts: VerifyOptions, weights_path: Path | None,
                         report: VerifyReport) -> dict[str, Any]:
    keep = opts.work_dir is not None
    work = Path(opts.work_dir) if opts.work_dir else Path(tempfile.mkdtemp(prefix="repro-verify-"))
    work = work.resolve()
    if work / "out" == opts.lock_path.resolve().parent:
        raise UserInputError(f"--work-dir {opts.work_dir}: would overwrite the lock being verified")
    work.mkdir(parents=True, exist_ok=True)
    try:
        python, env = None, {"mode": "current"}
        if opts.toolchain == "recreate":
            from repro.build.recreate import provision

            made = provision(cast(dict[str, Any], lock["toolchain"]), list(opts.find_links), opts.quiet)
            python, env = made.python, made.to_json()
        started = time.monotonic()
        box = sandbox_for(root, work, opts.world_size or lock["build"]["world_size"], opts.sandbox)
        out = run_rebuild(lock, root, work, opts.quiet, world_size=opts.world_size, python=python, sandbox=box)
        seconds = time.monotonic() - started
        rebuilt = lockfile.read(out / LOCK_NAME)
        # The rebuild's own record of its toolchain replaces the guess made before it.
        report.notes = [d for d in report.notes if d.section != "toolchain"]
        seen = {(d.kind, d.name) for d in report.differences + report.notes}
        for d in compare_locks(lock, rebuilt):
            if d.section == "inputs" and d.kind == "code" and d.change == "added":
                report.differences.append(dataclasses.replace(
                    d, detail="the rebuild imported this project file; the lock does not list it"))
                continue
            if (d.section == "inputs" and d.kind != "sample_order") or (d.kind, d.name) in seen:
                continue  # inputs were compared before the rebuild, by the same functions
            (report.notes if d.kind in NOTE_KINDS or d.section == "toolchain" else report.differences).append(d)
        report.differences = count_elements(report.differences, lock, weights_path, out / LOCK_NAME)
        report.differences = name_first_step(report.differences, lock, opts.lock_path.parent, rebuilt, out)
        localized = _localize(lock, root, opts, work, report.differences) if opts.localize else None
        return {"performed": True, "seconds": round(seconds, 3), "work_dir": str(work) if keep else None,
                "weights_sha256": rebuilt["outputs"]["weights"]["hashes"]["sha256"], "toolchain": env,
                "sandbox": {"active": box.active, "description": box.description}, "localized": localized}
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _localize(lock: Lock, root: Path, opts: VerifyOptions, work: Path,
              diffs: list[Difference]) -> dict[str, Any] | None:
    """--localize: the first differing op, when an environment here reproduces the lock's steps."""
    from repro.build.localize import localize_lock
    from repro.lock.lockfile import read_step_digests

    step = next((d.stats["first_step"] for d in diffs if d.kind == "step" and d.stats), None)
    recorded = read_step_digests(opts.lock_path.parent, lock)
    if not step or recorded is None:
        return None if not diffs else {"error": "no exact first step to replay (the lock has no step digests "
                                                "beside it, or every step agrees)"}
    return localize_lock(lock, root, int(step), recorded, work / "localize")


def write_record(report: VerifyReport, rebuild: dict[str, Any], opts: VerifyOptions,
                 lock_sha256: str) -> dict[str, Any]:
    """Leave verification.json beside the lock: what `repro audit` grants "Reproducible" from.

    A lock folder we may not write to does not undo the verification; the report says so.
    """
    from repro.trust.attestation import default_record_path, record_verification

    path = default_record_path(opts.lock_path)
    details = {"rebuild_seconds": rebuild["seconds"], "platform": platform.platform(),
               "differences": [d.line() for d in report.differences[:50]],
               "notes": [d.line() for d in report.notes[:50]]}
    try:
        record_verification(path, lock_sha256, rebuild["weights_sha256"], report.identical, details,
                            signing_key=opts.signing_key)
    except OSError as exc:
        return {"path": str(path), "written": False, "error": exc.strerror or str(exc)}
    return {"path": str(path), "written": True, "signed": opts.signing_key is not None}
