"""The source identity of a build: what a checkpoint records of the run that wrote it. No torch.

A resumed run ends in the bytes of one that never stopped only if every step ran
from the same source and toolchain: the data, the config, the project code the
build imported, the pins, and what compiled them (interpreter, distributions,
torch's build, repro's own compiler modules). `identify` takes all of it once the
model is built and its imports are known, before the first step. Every checkpoint
stores the identity of the run that wrote it, resume compares that with its own
(`changes`), and a lock keeps a summary of the identity at each resume boundary
whose source differs from the lock's (`boundaries`, the lock's `build.resumes`).

Nothing here names a path outside the project, a time or a process: an identity
is the same on every machine that builds the same source with the same toolchain.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from repro.canonical import compact_json, sha256_bytes
from repro.environment import toolchain
from repro.lock.lockdiff import Difference, compare_file_block, compare_toolchain, compare_values
from repro.lock.types import FilesBlock, JsonObject, PinRecord, ResumeBoundary, ResumeSource, Toolchain
from repro.source.discover import imported_project_files
from repro.source.inputs import code_block, code_include, compiler_block


class Identity(TypedDict):
    """A build's source identity (checkpoint.schema.json's `identity`): digests, the code, pins and toolchain."""

    config: str  # inputs.config.sha256
    data: str  # inputs.data.root_digest
    code: FilesBlock
    pins: PinRecord
    toolchain: Toolchain


class Boundary(TypedDict):
    """A checkpoint's `resumes` entry: where a run resumed, and the identity of the run that got it there."""

    step: int
    checkpoint: str
    identity: Identity


def toolchain_record() -> Toolchain:
    """The lock's `toolchain`: what this process has imported so far (see repro.environment.toolchain)."""
    return {**toolchain.record(), "repro": compiler_block(toolchain.compiler_files())}


def identify(resolved: JsonObject, config_sha256: str, data_root_digest: str, pins: PinRecord,
             root: Path) -> Identity:
    """This build's source identity now: call it once the model is built, before the first step.

    `config_sha256` and `data_root_digest` are the lock's inputs as hashed at
    start-up; the code is hashed here, as `code.include` plus every project file
    imported so far; `pins` is `Pins.to_json()`.
    """
    return {
        "config": config_sha256,
        "data": data_root_digest,
        "code": code_block(root, code_include(resolved), imported_project_files(root)),
        "pins": pins,
        "toolchain": toolchain_record(),
    }


def changes(old: Identity, new: Identity) -> list[Difference]:
    """What differs between two identities, in `repro diff`'s vocabulary (old: the checkpoint's)."""
    diffs: list[Difference] = []
    if old["config"] != new["config"]:
        diffs.append(Difference("inputs", "config", "sha256", "changed", old["config"], new["config"]))
    if old["data"] != new["data"]:
        diffs.append(Difference("inputs", "data", "root_digest", "changed", old["data"], new["data"]))
    diffs += compare_file_block("code", old["code"], new["code"])
    diffs += compare_values("build", "pin", old["pins"], new["pins"])
    return diffs + compare_toolchain(old["toolchain"], new["toolchain"])


def summary(identity: Identity) -> ResumeSource:
    """An identity as six digests: what the lock records at each resume boundary."""
    tools = {k: v for k, v in identity["toolchain"].items() if k != "repro"}
    return {
        "config": identity["config"], "data": identity["data"], "code": identity["code"]["root_digest"],
        "pins": sha256_bytes(compact_json(identity["pins"])), "toolchain": sha256_bytes(compact_json(tools)),
        "compiler": sha256_bytes(compact_json(identity["toolchain"]["repro"])),
    }


def boundaries(resumes: list[Boundary], final: Identity | None) -> list[ResumeBoundary] | None:
    """The lock's `build.resumes`: every resume boundary, if the source before any of them was not `final`.

    Each boundary gives the step, the summary of the identity of the run that
    trained up to it, and what in that identity differs from `final` (the run
    that wrote the lock). None when every boundary had `final`'s identity (or there
    was none): such resumes give the bytes of a run that never stopped, and the lock
    keeps the bytes of one (run.json lists them).
    """
    if final is None or not resumes:
        return None
    out: list[ResumeBoundary] = []
    for boundary in resumes:
        diffs = changes(boundary["identity"], final)
        out.append({"step": boundary["step"], "source": summary(boundary["identity"]),
                    "differs": [{"kind": d.kind, "name": d.name, "change": d.change} for d in diffs]})
    return out if any(b["differs"] for b in out) else None
