"""Run `repro check` and report: one row per variation, with its first step and op when it differs.

Exit 1 when a variation that the build's profile promises differs: everything
on one machine for `native`; other CPU models too for the default profile.
`profile` and `world` are reported only. The report is written to the config's
out_dir as `check.json`, where `repro card` finds it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro import __version__
from repro.check.localize import Localizer, explain, first_step, trace_folder
from repro.check.project import Project
from repro.check.runs import Run, profile_of, train
from repro.check.variations import AXES, BASELINE, Variation, promised, variations
from repro.errors import ConfigError, TrainingFailed
from repro.filenames import CHECK_NAME, LOCK_NAME
from repro.lock.types import Lock
from repro.progress import PhaseReport
from repro.records import JsonObject
from repro.source.compose import compose
from repro.source.config import ConfigSource
from repro.source.inputs import config_digest

__all__ = ["CHECK_NAME", "CheckOptions", "CheckReport", "check", "parse_axes", "render", "verdict"]

REPORT_VERSION = 1

# Expected to differ from the first step, so not localized; several ranks are not recorded either.
NOT_LOCALIZED = ("world", "profile")


@dataclass(frozen=True)
class CheckOptions:
    source: ConfigSource
    overrides: list[str]
    axes: tuple[str, ...] = AXES
    steps: int = 20
    localize: bool = True
    work_dir: Path | None = None
    progress: PhaseReport | None = None  # one line per build, as it finishes (repro.progress.phase_lines)


@dataclass
class AxisResult:
    axis: str
    variation: str
    what: str
    result: str  # identical | different | failed | skipped
    promised: bool
    seconds: float = 0.0
    first_step: int | None = None
    first_op: dict[str, Any] | None = None
    detail: str = ""
    weights_sha256: str | None = None

    def to_json(self) -> JsonObject:
        return {k: getattr(self, k) for k in ("axis", "variation", "what", "result", "promised", "seconds",
                                              "first_step", "first_op", "detail", "weights_sha256")}


@dataclass
class CheckReport:
    profile: str
    steps: int
    config_sha256: str
    baseline: dict[str, Any]
    rows: list[AxisResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if any(r.promised and r.result in ("different", "failed") for r in self.rows) else 0

    def to_json(self) -> JsonObject:
        return {"version": REPORT_VERSION, "repro": __version__, "profile": self.profile, "steps": self.steps,
                "config_sha256": self.config_sha256, "baseline": self.baseline, "seconds": round(self.seconds, 1),
                "exit_code": self.exit_code, "axes": [r.to_json() for r in self.rows]}


def parse_axes(text: str | None) -> tuple[str, ...]:
    if not text:
        return AXES
    axes = tuple(a.strip() for a in text.split(",") if a.strip())
    unknown = [a for a in axes if a.partition(":")[0] not in AXES or (":" in a and not a.startswith("cpu:"))]
    if unknown or not axes:
        raise ConfigError(f"--axes {text}: unknown axis {unknown[0] if unknown else '(none)'}; "
                          f"expected a comma-separated subset of {','.join(AXES)}")
    return axes


def check(opts: CheckOptions) -> CheckReport:
    """Baseline, then every variation; compare; localize what differs."""
    if opts.steps < 1:
        raise ConfigError(f"--steps {opts.steps}: expected a positive number of steps")
    resolved = compose(opts.source, [*opts.overrides, f"trainer.max_steps={opts.steps}"])
    work = Path(opts.work_dir or tempfile.mkdtemp(prefix="repro-check-")).resolve()
    project = Project(opts.source, list(opts.overrides), resolved, opts.steps, work)
    if any(a.partition(":")[0] == "path" for a in opts.axes) and not opts.source.embedded:
        from repro.builder.clone import clone_files

        project.clone = clone_files(opts.source.root)  # outside git: refused now, before any build
    started = time.monotonic()
    say = opts.progress or (lambda _line, _done, _total: None)
    try:
        todo = variations(project, opts.axes)
        total = 1 + len(todo)
        say(f"baseline: building {opts.steps} steps in a clean shell ({len(todo)} variation(s) to follow)", 0, total)
        base_trace = trace_folder(project, BASELINE, "all") if opts.localize else None
        base = train(project, BASELINE, trace=None if base_trace is None else (project.steps, base_trace))
        if base.error is not None:
            raise TrainingFailed(f"the baseline build failed ({base.error}); fix `repro train` first")
        assert base.lock is not None
        project.needed = read_files(base.lock, resolved)
        profile = profile_of(resolved)
        say(f"baseline: built in {base.seconds:.1f} s, weights sha256 {str(base.weights_sha256)[:12]}…", 1, total)
        report = CheckReport(profile, opts.steps, config_digest(resolved)["sha256"],
                             {"what": BASELINE.what, "seconds": base.seconds, "weights_sha256": base.weights_sha256})
        localizer = Localizer(project, recorded=base_trace)
        for i, variation in enumerate(todo, 1):
            row = _one(project, variation, base, profile, localizer if opts.localize else None)
            report.rows.append(row)
            say(f"{variation.axis}/{variation.name} ({i}/{len(todo)}): {row.result}"
                + (f" in {row.seconds:.1f} s" if row.result != "skipped" else "")
                + (f": {row.detail}" if row.result in ("failed", "skipped") and row.detail else ""), 1 + i, total)
        report.seconds = time.monotonic() - started
        return report
    finally:
        if opts.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def read_files(lock: Lock, resolved: JsonObject) -> list[str]:
    """What the baseline build read from the project: its data and code files, and the records of the
    stages that made the data (a copy without them cannot build)."""
    from repro.source.stages import stage_specs

    data = [str(f["path"]) for f in lock["inputs"]["data"]["files"]]
    code = [str(f["path"]) for f in lock["inputs"]["code"]["files"]]
    made = {r["stage"] for r in lock["inputs"].get("stages", [])}
    records = [spec.record for spec in stage_specs(resolved).values() if spec.name in made]
    return sorted(set(data + code + records))


def _one(project: Project, variation: Variation, base: Run, profile: str,
         localizer: Localizer | None) -> AxisResult:
    row = AxisResult(variation.axis, variation.name, variation.what, "skipped", promised(variation, profile))
    if variation.what.startswith("skipped:"):
        row.detail, row.promised = variation.what.removeprefix("skipped: "), False
        return row
    # When localizing, the build itself records its ops, every step (the recorder reads, it changes no
    # value), as the baseline's did: a difference is then named from the two builds that differ, with
    # no replay (an emulated build is ~30x slower; a racy op need not part a replay).
    localized = localizer is not None and variation.axis not in NOT_LOCALIZED
    recorded = trace_folder(project, variation, "all") if localized else None
    run = train(project, variation, trace=None if recorded is None else (project.steps, recorded))
    row.seconds, row.weights_sha256 = run.seconds, run.weights_sha256
    if run.error is not None:
        row.result, row.detail = "failed", run.error
        return row
    same_config = not variation.overrides or variation.interrupt
    assert base.lock is not None and run.lock is not None
    same = base.weights_sha256 == run.weights_sha256 and base.digests == run.digests
    if same and (not same_config or _lock_bytes(base) == _lock_bytes(run)):
        row.result = "identical"
        return row
    row.result = "different"
    row.first_step = first_step(base, run)
    if row.first_step is None:
        row.detail = explain(base, run)
    elif localized and localizer is not None:
        row.first_op = localizer.op(variation, row.first_step, recorded)
        row.detail = row.first_op.get("line") or row.first_op.get("error", "")
    return row


def _lock_bytes(run: Run) -> bytes:
    return (run.out_dir / LOCK_NAME).read_bytes()


def render(report: CheckReport) -> list[str]:
    """The table, then one line per differing variation saying where it parted."""
    head = ("axis", "variation", "result", "promised", "first step")
    rows = [(r.axis, r.variation, r.result, "yes" if r.promised else "no",
             "-" if r.first_step is None else str(r.first_step)) for r in report.rows]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [f"baseline   {report.steps} steps, profile {report.profile}, weights sha256 "
             f"{str(report.baseline['weights_sha256'])[:12]}… ({report.baseline['seconds']:.1f} s)", ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in (head, *rows)]
    notes = [r for r in report.rows if r.detail]
    if notes:
        lines.append("")
    for r in notes:
        where = f"step {r.first_step}: " if r.first_step is not None else ""
        lines.append(f"{r.axis}/{r.variation}: {where}{r.detail}")
    lines.append("")
    lines.append(verdict(report))
    return lines


def verdict(report: CheckReport) -> str:
    """The last line: a build that failed is "failed", never counted as one that differs."""
    differ = [r.variation for r in report.rows if r.promised and r.result == "different"]
    failed = [r.variation for r in report.rows if r.promised and r.result == "failed"]
    parts = []
    if differ:
        parts.append(f"MISMATCH: {len(differ)} promised variation(s) differ ({', '.join(differ)})")
    if failed:
        parts.append(f"FAILED: {len(failed)} promised variation(s) could not be built ({', '.join(failed)}; "
                     "why is above)")
    return "; ".join(parts) if parts else f"OK: every variation the {report.profile} profile promises is identical"
