"""verify's checks before a rebuild: each reads the lock (and this machine) and returns differences.

None of them imports torch or anything the lock names: `repro verify --inputs-only`
is these checks alone. The same functions as `repro train` hash the source
(`repro.source.inputs.hash_inputs`) and resolve the pins, so verify and train
cannot disagree about what a lock means.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from repro.environment.machine import machine_cores
from repro.environment.pins import PIN_KEYS, check_capability, native_capability, resolve_pins
from repro.environment.toolchain import installed_versions, interpreter_facts
from repro.errors import DataError, EnvironmentMismatch, LockfileError, ReproError
from repro.lock.explain import explain_config_edit, reference_configs
from repro.lock.inputs_record import hash_inputs
from repro.lock.lockdiff import Difference, compare_tensor_records, compare_toolchain
from repro.lock.types import Inputs, Lock, Toolchain, Weights
from repro.progress import byte_bar
from repro.safeio import open_regular, printable
from repro.source.config import require
from repro.source.data import DataSpec
from repro.source.filetree import resolve_under
from repro.source.hashfile import digest_fd
from repro.source.inputs import PACKAGE_DIR, compiler_block, data_files
from repro.verify.report import Checked


def rehash_inputs(lock: Lock, root: Path, quiet: bool = True) -> tuple[Inputs, Checked]:
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
        spec = DataSpec.from_config(resolved)
        found = hash_inputs(resolved, root, spec, data_files(resolved, root, spec).hashed, imported=present,
                            use_cache=False, progress=bar)
    if "stages" in lock["inputs"]:  # intermediates are inputs here; --from-source rebuilds them
        found["stages"] = lock["inputs"]["stages"]
    data = found["data"]["files"]
    checked: Checked = {"data_files": len(data), "data_bytes": sum(f["size"] for f in data),
               "code_files": len(found["code"]["files"]), "compiler_files": len(lock["toolchain"]["repro"]["files"]),
               "config_sha256": found["config"]["sha256"], "weights_file": None}
    return found, checked


def current_toolchain(recorded: Toolchain) -> Toolchain:
    """This environment, in the shape of the lock's toolchain, as far as it is known without importing.

    Distributions are looked up by the recorded names (installed metadata); torch's
    version and build tag come from its metadata, its library versions only from a
    rebuild; repro's compiler is the recorded module list, hashed as installed here. The
    C++ compiler of the portable kernels is known only by running it, which a rebuild
    does (its lock's toolchain replaces this guess), so the recorded one stands here.
    """
    installed = installed_versions(sorted(recorded["distributions"]))
    torch: dict[str, Any] | None = None if recorded["torch"] is None else dict(recorded["torch"])
    if torch is not None:
        version = installed.get("torch") or installed_versions(["torch"])["torch"]
        torch = {**torch, "version": version, "build": None if version is None else version.partition("+")[2] or None}
    base = PACKAGE_DIR.parent
    present = [f["path"] for f in recorded["repro"]["files"] if (base / f["path"]).is_file()]
    kernels = {"kernels": recorded["kernels"]} if "kernels" in recorded else {}
    return cast(Toolchain, {**interpreter_facts(), "torch": torch, "repro": compiler_block(present),
                            "distributions": {k: v for k, v in installed.items() if v is not None}, **kernels})


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
    expected: Mapping[str, object] = resolve_pins(require(resolved, "build", dict),
                                                  require(resolved, "seed", int)).to_json()
    build: Mapping[str, object] = lock["build"]  # read by pin name
    flags = lock["build"]["flags"]
    diffs = [
        Difference("build", "pin", key, "changed", expected[key], build[key],
                   f"the lock's build section says {build[key]!r} but its config resolves to {expected[key]!r}")
        for key in PIN_KEYS if build[key] != expected[key]
    ]
    for flag, pin in FLAG_PINS.items():
        if flag in flags and flags[flag] != build[pin]:
            diffs.append(Difference("build", "pin", pin, "changed", flags[flag], build[pin],
                                    f"torch reported {flag}={flags[flag]!r} at build time, "
                                    f"but the pin says {build[pin]!r}"))
    return diffs


def check_weights_file(path: Path, recorded: Weights, follow_links: bool = True, fd: int | None = None
                       ) -> list[Difference]:
    """Size and sha256 of a weights file, then tensor by tensor if those differ. No torch.

    The file must be a regular one (not a FIFO or device; not a link unless
    `follow_links`); when it differs, its tensors are hashed one chunk at a time.
    Everything is read through one descriptor: `fd` if the caller opened and
    checked it (the weights beside a lock, opened beneath the lock's folder), else
    the one `open_regular` gives here. The path is never opened again by name, so
    a file swapped in after the check is never the one hashed.
    """
    own = fd is None
    if fd is None:
        fd, _ = open_regular(path, "weights file", DataError, follow_links)
    try:
        hashed = digest_fd(fd, shown=printable(str(path)))
        size, sha = hashed.size, hashed.digests["sha256"]
        if size == recorded["size"] and sha == recorded["hashes"]["sha256"]:
            return []
        return _weights_differ(path, recorded, size, sha, fd)
    finally:
        if own:
            os.close(fd)


def _weights_differ(path: Path, recorded: Weights, size: int, sha: str, fd: int) -> list[Difference]:
    """The file's difference, then its tensors' (streamed through `fd`), compared with the lock's records."""
    from repro.lock.tensordiff import read_tensors

    whole = Difference("outputs", "weights", str(path), "changed", recorded["hashes"]["sha256"], sha,
                       f"size {recorded['size']} -> {size}" if size != recorded["size"] else "")
    try:  # streamed tensor by tensor through one descriptor: bounded memory whatever the file's size
        with read_tensors(path, fd=fd) as weights:
            records = weights.records()
    except ReproError as exc:
        return [dataclasses.replace(whole, detail=f"not readable as safetensors: {exc}")]
    per_tensor = compare_tensor_records(recorded["tensors"], records)
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


def resume_notes(lock: Lock) -> list[Difference]:
    """The lock's own record of resumes from a checkpoint of another source (`build.resumes`), one note each.

    A note, not a difference: the other source may have computed the same bits (an
    edit to a comment); the rebuild decides, and the hint names the resume.
    """
    notes = []
    for b in lock["build"].get("resumes", []):
        if b["differs"]:
            names = ", ".join(f"{d['kind']} {d['name']}" for d in b["differs"][:3])
            more = f" and {len(b['differs']) - 3} more" if len(b["differs"]) > 3 else ""
            notes.append(Difference("build", "resume", f"step {b['step']}", "changed", detail=(
                f"resumed from a checkpoint made from another source: {names}{more}")))
    return notes
