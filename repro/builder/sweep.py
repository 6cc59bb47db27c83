"""`repro train -m key=a,b other=x,y`: a Hydra sweep whose every job is a rebuildable build.

Hydra's sweeper expands the overrides (BasicSweeper: the cartesian product; an
installed sweeper plugin, chosen with `hydra/sweeper=...`, works the same way) and
its launcher runs one job per combination. Each job is `repro train` in a fresh
process, with that job's overrides and `out_dir` set to the job's folder, so a job
is exactly the build that `repro train <its overrides>` would be: its own pins, its
own out_dir lock, its own repro.lock. A job that fails does not stop the others.

Layout (Hydra's sweep-dir convention, with a path that does not change between runs,
so a rerun gives the same bytes): `hydra.sweep.dir` defaults to `${out_dir}/multirun`,
`hydra.sweep.subdir` to Hydra's `${hydra.job.num}`. `sweep.json` in the sweep dir
lists each job's overrides, status, lock digest and metrics, as canonical JSON.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.canonical import atomic_write_json
from repro.errors import ConfigError, Interrupted
from repro.filenames import LOCK_NAME
from repro.lifetime import supervise
from repro.lock import lockfile
from repro.source.config import ConfigSource
from repro.source.hydra_main import hydra_app, hydra_errors
from repro.source.inputs import PACKAGE_DIR

SUMMARY_NAME = "sweep.json"
SUMMARY_VERSION = 1
# Defaults that make the layout deterministic; a user's own hydra.sweep.* override wins.
SWEEP_DEFAULTS = {"hydra.sweep.dir": "${out_dir}/multirun", "hydra.sweep.subdir": "${hydra.job.num}"}
# With --quiet, Hydra's own log lines ("Launching 3 jobs locally", ...) are silenced too.
QUIET = ["hydra/hydra_logging=disabled", "hydra/job_logging=disabled"]


@dataclass(frozen=True)
class SweepReport:
    """Where the summary went, what it says, and the exit code the sweep ends with."""

    summary_path: Path
    summary: dict[str, Any]
    exit_code: int


def run_sweep(source: ConfigSource, overrides: list[str], quiet: bool, rehash: bool = False) -> SweepReport:
    """Run the sweep through Hydra's sweeper and launcher; write and return its summary.

    Raises ConfigError (one line) when Hydra refuses the sweep before any job runs
    (an unknown group option, a malformed override): the sweeper composes every
    job's config first.
    """
    jobs: list[dict[str, Any]] = []
    where: list[Path] = []

    def task(_cfg: Any) -> int:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        sweep_dir = Path(hc.sweep.dir).resolve()
        where[:] = [sweep_dir]
        job = run_job(source, list(hc.overrides.task), Path(hc.runtime.output_dir).resolve(), quiet, rehash)
        jobs.append({"num": int(hc.job.num), "out_dir": _relative(job.pop("out_dir"), sweep_dir), **job})
        return int(job["exit_code"])

    given = {o.split("=", 1)[0] for o in overrides}
    extra = [f"{k}={v}" for k, v in SWEEP_DEFAULTS.items() if k not in given] + (QUIET if quiet else [])
    # Hydra's launcher logs to stdout ("Launching 2 jobs locally"); stdout is the command's result (one JSON
    # object with --json), so its log goes to stderr. Its handlers resolve `ext://sys.stdout` when configured.
    with hydra_app(source) as hydra, hydra_errors(), contextlib.redirect_stdout(sys.stderr):
        hydra.multirun(config_name=source.config_name, task_function=task, overrides=[*extra, *overrides],
                       with_log_configuration=not quiet)
    if not where:  # a sweeper plugin may launch no job at all
        raise ConfigError("the sweep has no jobs: the sweeper launched none")
    jobs.sort(key=lambda j: j["num"])
    summary = {"version": SUMMARY_VERSION, "config_name": source.config_name, "overrides": list(overrides),
               "jobs": jobs}
    path = where[0] / SUMMARY_NAME
    atomic_write_json(path, summary)
    failed = [j["exit_code"] for j in jobs if j["status"] != "ok"]
    return SweepReport(path, summary, failed[0] if failed else 0)


def run_job(source: ConfigSource, overrides: list[str], out_dir: Path, quiet: bool,
            rehash: bool) -> dict[str, Any]:
    """One job: `repro train` in a fresh process; its status, lock digest and metrics.

    A fresh process per job keeps jobs from sharing torch's process state (its CPU
    dispatch level is fixed at import) and makes each job the very build a single
    `repro train` with its overrides would be. The job's own flags come last.
    """
    cmd = [sys.executable, "-m", "repro", "train", "--config-dir", str(source.config_dir),
           "--config-name", source.config_name, "--root", str(source.root), *(["--quiet"] if quiet else []),
           *(["--rehash"] if rehash else []), *overrides, f"out_dir={out_dir}"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_DIR.parent), *filter(None, [env.get("PYTHONPATH")])])
    # The job dies with this process; a stop signal is forwarded to it, and ends the sweep once it stopped.
    proc = supervise(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                     text=True)
    if proc.stderr and not quiet:
        sys.stderr.write(proc.stderr)
    if proc.signum is not None:  # where the job stopped, in its words after "interrupted by SIGINT"
        said = _error_line(proc.stderr, proc.code).removeprefix(str(Interrupted(proc.signum)))
        raise Interrupted(proc.signum, f" during job {' '.join(overrides)}" + (said if said.startswith(" ") else ""))
    record: dict[str, Any] = {"overrides": overrides, "out_dir": out_dir, "exit_code": proc.code}
    if proc.code != 0:
        return {**record, "status": "failed", "error": _error_line(proc.stderr, proc.code)}
    lock, lock_sha256 = lockfile.load(out_dir / LOCK_NAME)  # the one lock reader: bounded, strict, validated
    outputs = lock["outputs"]
    return {**record, "status": "ok", "lock_sha256": lock_sha256,
            "weights_sha256": outputs["weights"]["hashes"]["sha256"], "final_loss": outputs["final_loss"],
            "metrics": outputs["metrics"]}


def _error_line(stderr: str, code: int) -> str:
    """The job's one-line error, without the `repro train: error: ` prefix."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("repro train: ")]
    line = (errors or lines or [f"exit code {code}"])[-1]
    return line.removeprefix("repro train: error: ").removeprefix("repro train: ")


def _relative(path: Path, base: Path) -> str:
    """A job folder as the summary names it: relative to the sweep dir, so the bytes do not name the machine."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:  # a hydra.sweep.subdir that leaves the sweep dir: keep it as given
        return path.as_posix()

