"""What `repro verify` was asked (`VerifyOptions`), what it found (`VerifyReport`), and the record it leaves.

The report's JSON is `repro verify --json`'s `result` (docs/verify.md); its
exit code is decided here, from its differences and notes.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict

from repro import __version__
from repro.lock.lockdiff import Difference
from repro.lock.types import BaseBlock
from repro.progress import PhaseReport
from repro.records import JsonObject

REPORT_VERSION = 2
# Differences that describe where and with what a build ran, not what it is.
NOTE_KINDS = ("cuda", "resume")
# The source: a difference here is a mismatch whatever the toolchain did (exit 1).
SOURCE_KINDS = ("data", "code", "config", "preprocess", "stage", "stage config", "stage input", "stage code",
                "stage output")
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
    trust_code: bool = False  # run `_target_`s outside the trusted set (repro.builder.gate)
    allow_oversubscribe: bool = False  # rebuild with more threads than OVERSUBSCRIBE x this machine's cores
    sandbox: bool = True  # network off, project read-only, where the machine allows it (repro.builder.sandbox)
    localize: bool = False  # on a mismatch, name the first differing op where the lock's machine can be emulated
    progress: PhaseReport | None = None  # one line per phase as it ends (repro.progress.phase_lines)

    def say(self, line: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(line, done, total)


class Checked(TypedDict, total=False):
    """What was checked before any rebuild (`repro verify --json`'s `checked`); each step adds its own keys."""

    data_files: int
    data_bytes: int
    code_files: int
    compiler_files: int
    config_sha256: str
    weights_file: str | None  # a weights file compared with the lock's digests
    trusted_anyway: list[str]  # `_target_`s run outside the trusted set (--trust-code)
    primary_sources: int  # --from-source: files copied because no stage made them


class SandboxNote(TypedDict):
    active: bool
    description: str


class Rebuild(TypedDict):
    """The report's `rebuild`: what the rebuild did, or why there was none (`performed` false, `reason`)."""

    performed: bool
    reason: NotRequired[str]
    seconds: NotRequired[float]
    work_dir: NotRequired[str | None]  # kept only when --work-dir names it
    weights_sha256: NotRequired[str]
    toolchain: NotRequired[JsonObject]  # {"mode": "current"}, or the recreated environment (repro.verify.recreate)
    sandbox: NotRequired[SandboxNote]
    localized: NotRequired[JsonObject | None]  # --localize: the first differing op (repro.check.localize)


class RecordNote(TypedDict):
    """Where verification.json went (`record`)."""

    path: str
    written: bool
    signed: NotRequired[bool]
    error: NotRequired[str]


class StageRun(TypedDict):
    """--from-source: one stage rerun from its record."""

    stage: str
    seconds: float
    identical: bool
    first_differing_output: str | None


class VerifyResult(TypedDict):
    """`repro verify --json`'s `result` (docs/verify.md)."""

    version: int
    repro: str
    result: str
    exit_code: int
    lockfile: str
    root: str
    root_source: str
    mode: str
    checked: Checked
    differences: list[JsonObject]
    notes: list[JsonObject]
    hints: list[str]
    rebuild: Rebuild | None
    record: RecordNote | None
    stages: list[StageRun]


@dataclass
class VerifyReport:
    """Everything verify found. `differences` decide the exit code; `notes` do not."""

    lockfile: str
    root: str
    root_source: str
    mode: str
    checked: Checked
    differences: list[Difference] = field(default_factory=list)
    notes: list[Difference] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    rebuild: Rebuild | None = None
    record: RecordNote | None = None
    base: BaseBlock | None = None  # the lock's inputs.base: where `--recursive` goes next
    stages: list[StageRun] = field(default_factory=list)  # --from-source: each stage rerun

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

    def to_json(self) -> VerifyResult:
        return {
            "version": REPORT_VERSION, "repro": __version__,
            "result": self.result, "exit_code": self.exit_code,
            "lockfile": self.lockfile, "root": self.root, "root_source": self.root_source, "mode": self.mode,
            "checked": self.checked, "differences": [d.to_json() for d in self.differences],
            "notes": [d.to_json() for d in self.notes], "hints": self.hints, "rebuild": self.rebuild,
            "record": self.record, "stages": self.stages,
        }


def write_record(report: VerifyReport, rebuild: Rebuild, opts: VerifyOptions,
                 lock_sha256: str) -> RecordNote:
    """Leave verification.json beside the lock: what `repro audit` grants "Reproducible" from.

    A lock folder we may not write to does not undo the verification; the report says so.
    """
    from repro.trust.attestation import default_record_path, record_verification

    path = default_record_path(opts.lock_path)
    details: JsonObject = {"rebuild_seconds": rebuild["seconds"], "platform": platform.platform(),
               "differences": [d.line() for d in report.differences[:50]],
               "notes": [d.line() for d in report.notes[:50]]}
    try:
        record_verification(path, lock_sha256, rebuild["weights_sha256"], report.identical, details,
                            signing_key=opts.signing_key)
    except OSError as exc:
        return {"path": str(path), "written": False, "error": exc.strerror or str(exc)}
    return {"path": str(path), "written": True, "signed": opts.signing_key is not None}
