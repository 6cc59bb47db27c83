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
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from repro import __version__
from repro.build import gate
from repro.build.localize import name_first_step
from repro.build.rebuild import run_rebuild
from repro.build.sandbox import sandbox_for
from repro.environment.machine import machine_cores
from repro.environment.pins import check_bounds, check_capability, native_capability, resolve_pins
from repro.environment.toolchain import installed_versions, interpreter_facts
from repro.errors import ConfigError, DataError, EnvironmentMismatch, LockfileError, ReproError, UserInputError
from repro.filenames import LOCK_NAME
from repro.lock import lockfile
from repro.lock.diff import (
    PIN_KEYS,
    Difference,
    compare_inputs,
    compare_locks,
    compare_tensor_records,
    compare_toolchain,
)
from repro.lock.explain import explain_config_edit, hints, reference_configs
from repro.lock.lineage import explain_lineage
from repro.lock.types import BaseBlock, Inputs, Lock, TensorRecord, Toolchain, Weights
from repro.progress import byte_bar
from repro.safeio import open_regular, printable
from repro.source.config import require
from repro.source.filetree import resolve_under
from repro.source.hashing import hash_file
from repro.source.inputs import PACKAGE_DIR, compiler_block, hash_inputs

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
    base: BaseBlock | None = None  # the lock's inputs.base: where `--recursive` goes next
    stages: list[dict[str, Any]] = field(default_factory=list)  # --from-source: each stage rerun

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
            "record": self.record, "stages": self.stages,
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
        report = VerifyReport(str(opts.lock_path), str(root), root_source, mode, checked,
                              base=lock["inputs"].get("base"))
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


def built_at_commit(lock_path: Path) -> str | None:
    """The git commit the build ran at, from run.json beside the lock (not in the lock:
    a lock committed to git cannot name the commit that holds it). None if unknown."""
    from repro.trust.card import build_commit

    git = build_commit(lock_path.parent)
    return None if git is None else str(git["commit"])


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
    start = lock_path.resolve().parent
    top = _git_toplevel(start)
    data = [f["path"] for f in lock["inputs"]["data"]["files"]]

    def holds_data(folder: Path) -> bool:
        return any((folder / p).is_file() for p in data)

    if top is not None and holds_data(top):
        return top, "the git repository holding the lockfile"
    # Never above the git top level, nor above the lock's own folder outside git: a
    # stranger's lock must not make us hash /etc/passwd or write /.repro/.
    above = [start] if top is None or not start.is_relative_to(top) else \
        [start, *(p for p in start.parents if p.is_relative_to(top))]
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


def _git_toplevel(folder: Path) -> Path | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(out).resolve() if out else None


def rehash_inputs(lock: Lock, root: Path, quiet: bool = True) -> tuple[Inputs, dict[str, Any]]:
    """Hash the source the lock names, today, under `root`: a lock-shaped `inputs`, and counts. Imports nothing.

    The same `hash_inputs` as `repro train`, with every data byte read (the fresh
    digests refresh the stat cache, so the rebuild's own hashing sees the truth).
    Data file lists come from expanding the config's patterns again, so a data
    file added to or removed from a data folder shows up. Code is exactly the
    recorded files (the ones the build imported, and code.include's), plus any
    file code.include matches today; a recorded file that is gone is reported as removed.
    """
    resolved = lock["inputs"]["config"]["resolved"]
    task = resolved.get("task")
    if isinstance(task, dict) and task.get("tokenizer") is not None:  # a path the rebuild reads and copies
        if not isinstance(task["tokenizer"], str):
            raise LockfileError(f"config key task.tokenizer: expected a relative path, got {task['tokenizer']!r}")
        resolve_under(root, task["tokenizer"], "config key task.tokenizer")
    recorded = [f["path"] for f in lock["inputs"]["code"]["files"]]
    present = [p for p in recorded if resolve_under(root, p, "code file").is_file()]
    with byte_bar(quiet, "hash data") as bar:
        found = hash_inputs(resolved, root, imported=present, use_cache=False, progress=bar)
    if "stages" in lock["inputs"]:  # intermediates are inputs here; --from-source rebuilds them
        found["stages"] = lock["inputs"]["stages"]
    data = found["data"]["files"]
    checked = {"data_files": len(data), "data_bytes": sum(f["size"] for f in data),
               "code_files": len(found["code"]["files"]), "compiler_files": len(lock["toolchain"]["repro"]["files"]),
               "config_sha256": found["config"]["sha256"], "weights_file": None}
    return cast(Inputs, found), checked


def current_toolchain(recorded: Toolchain) -> Toolchain:
    """This environment, in the shape of the lock's toolchain, as far as it is known without importing.

    Distributions are looked up by the recorded names (installed metadata); torch's
    version and build tag come from its metadata, its library versions only from a
    rebuild; repro's compiler is the recorded module list, hashed as installed here.
    """
    installed = installed_versions(sorted(recorded["distributions"]))
    torch: dict[str, Any] | None = None if recorded["torch"] is None else dict(recorded["torch"])
    if torch is not None:
        version = installed.get("torch") or installed_versions(["torch"])["torch"]
        torch = {**torch, "version": version, "build": None if version is None else version.partition("+")[2] or None}
    base = PACKAGE_DIR.parent
    present = [f["path"] for f in recorded["repro"]["files"] if (base / f["path"]).is_file()]
    return cast(Toolchain, {**interpreter_facts(), "torch": torch, "repro": compiler_block(present),
                            "distributions": {k: v for k, v in installed.items() if v is not None}})


def toolchain_check(recorded: Toolchain) -> list[Difference]:
    """How this environment's toolchain differs from the recorded one (notes: a rebuild decides)."""
    return [dataclasses.replace(d, detail=d.detail or "installed here")
            for d in compare_toolchain(recorded, current_toolchain(recorded))]


def explain_config(diffs: list[Difference], lock: Lock, root: Path) -> list[Difference]:
    """Replace "config digest differs" by the edited keys and their old values, when provable."""
    digest = [d for d in diffs if d.kind == "config" and d.name == "sha256"]
    if not digest:
        return diffs
    config = lock["inputs"]["config"]
    edits = explain_config_edit(config["resolved"], config["sha256"], reference_configs(root))
    if edits is None:
        detail = "the lock's config no longer hashes to its recorded digest: it was edited after the build"
        return [dataclasses.replace(d, detail=detail) if d in digest else d for d in diffs]
    return [d for d in diffs if d not in digest] + edits


# Flags torch reported at build time that must equal a pin (flag name -> pin name).
FLAG_PINS = {"threads": "threads", "cpu_capability": "cpu_capability",
             "use_deterministic_algorithms": "deterministic", "mkldnn": "mkldnn"}


def pin_consistency(lock: Lock) -> list[Difference]:
    """The lock's build pins must be what its own config resolves to, and what torch reported."""
    resolved = lock["inputs"]["config"]["resolved"]
    expected = resolve_pins(require(resolved, "build", dict), require(resolved, "seed", int)).to_json()
    build: dict[str, Any] = dict(lock["build"])  # read by pin name
    diffs = [
        Difference("build", "pin", key, "changed", expected[key], build[key],
                   f"the lock's build section says {build[key]!r} but its config resolves to {expected[key]!r}")
        for key in PIN_KEYS if build[key] != expected[key]
    ]
    for flag, pin in FLAG_PINS.items():
        if flag in build["flags"] and build["flags"][flag] != build[pin]:
            diffs.append(Difference("build", "pin", pin, "changed", build["flags"][flag], build[pin],
                                    f"torch reported {flag}={build['flags'][flag]!r} at build time, "
                                    f"but the pin says {build[pin]!r}"))
    return diffs


def check_weights_file(path: Path, recorded: Weights, follow_links: bool = True) -> list[Difference]:
    """Size and sha256 of a weights file, then tensor by tensor if those differ. No torch.

    The file must be a regular one (not a FIFO or device; not a link unless
    `follow_links`), and is read whole only when it differs and is under the cap.
    """
    from repro.lock.tensordiff import read_tensors

    fd, st = open_regular(path, "weights file", DataError, follow_links)
    os.close(fd)
    size, sha = hash_file(path)
    if size == recorded["size"] and sha == recorded["hashes"]["sha256"]:
        return []
    whole = Difference("outputs", "weights", str(path), "changed", recorded["hashes"]["sha256"], sha,
                       f"size {recorded['size']} -> {size}" if size != recorded["size"] else "")
    try:
        tensors = read_tensors(path, follow_links)
    except ReproError as exc:
        return [dataclasses.replace(whole, detail=f"not readable as safetensors: {exc}")]
    per_tensor = compare_tensor_records(recorded["tensors"], [cast(TensorRecord, t.record()) for t in tensors.values()])
    if not per_tensor:
        whole = dataclasses.replace(whole, detail="every tensor matches the lock; only the file's header differs")
    return [whole, *per_tensor]


def machine_check(lock: Lock, rebuilding: bool) -> list[Difference]:
    """Pins versus this machine. A CPU level it cannot run raises when a rebuild would run (exit 3).

    Another toolchain never stops a rebuild: the rebuild is what tells whether it
    changes the bits (see `VerifyReport.exit_code`).
    """
    build = lock["build"]
    notes: list[Difference] = []
    try:
        check_capability(build["cpu_capability"])
    except EnvironmentMismatch:
        notes.append(Difference("build", "pin", "cpu_capability", "changed", build["cpu_capability"],
                                native_capability(), "this CPU's highest level; it cannot run the pinned one"))
        if rebuilding:
            raise
    cores = machine_cores()
    if cores != build["threads"]:
        notes.append(Difference("build", "pin", "threads", "changed", build["threads"], cores,
                                f"this machine has {cores} cores; fine: the pin of {build['threads']} is applied"))
    return notes


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


def count_elements(diffs: list[Difference], lock: Lock, original: Path | None,
                   rebuilt_lock: Path) -> list[Difference]:
    """Add "N of M elements differ, max abs diff X" to each differing tensor.

    Needs the original values: a weights file whose tensor matches the lock's digest.
    """
    from repro.lock.tensordiff import element_diff, read_tensors

    changed = [d for d in diffs if d.kind == "tensor" and d.change == "changed" and d.section == "outputs"]
    if not changed:
        return diffs
    records = {t["name"]: t for t in lock["outputs"]["weights"]["tensors"]}
    theirs = read_tensors(original) if original is not None else {}
    ours = read_tensors(rebuilt_lock.parent / lock["outputs"]["weights"]["path"])
    out = []
    for d in diffs:
        if d in changed and d.name in theirs and theirs[d.name].record() == records.get(d.name) and d.name in ours:
            e = element_diff(theirs[d.name], ours[d.name])
            mad = "n/a" if e["max_abs_diff"] is None else f"{e['max_abs_diff']:.3g}"
            d = dataclasses.replace(d, stats=e, detail=f"{e['differing']} of {e['elements']} elements differ, "
                                                       f"max abs diff {mad}")
        elif d in changed:
            d = dataclasses.replace(d, detail="no weights file with the lock's values to count differing elements "
                                              "(pass --weights FILE)")
        out.append(d)
    return out
