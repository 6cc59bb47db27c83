"""`repro check`: build once as a baseline, then once per variation, each in a fresh process.

Like Debian's reprotest, every variation changes one condition a stranger's
rebuild could differ in, and the builds are compared: weights, per-step
parameter digests and the lock. Each run is a real `repro train` started the
way a user would start it (its own shell, working directory, core set or
emulated CPU), so what repro pins and what it does not are both tested.

A variation that differs is then localized (`repro.check.localize`): the first
step whose parameters differ, and the first operation of that step.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from repro.canonical import sha256_bytes
from repro.check.emulate import qemu_python
from repro.check.project import Project
from repro.check.variations import NOISY_ENV, Variation
from repro.environment.pins import SHELL_KNOBS, resolve_pins
from repro.errors import Interrupted
from repro.filenames import CHECKPOINTS_DIR, LOCK_NAME, RUN_NAME, STEPS_NAME, WEIGHTS_NAME
from repro.lifetime import start, supervise
from repro.lock import lockfile
from repro.lock.types import Lock
from repro.records import JsonObject
from repro.source.config import require
from repro.source.data import DataSpec, hashed_file_list
from repro.source.inputs import PACKAGE_DIR

KILL_GRACE = 120  # seconds a SIGKILLed build may take to let go of its out_dir
_CLEAN = {"PYTHONHASHSEED": "0", "TZ": "UTC", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TERM": "xterm", "COLUMNS": "80"}


@dataclass
class Run:
    """One finished build (or why it did not finish)."""

    out_dir: Path
    seconds: float
    error: str | None = None
    weights_sha256: str | None = None
    lock: Lock | None = None
    digests: list[str] | None = None


def environment(variation: Variation, work: Path) -> dict[str, str]:
    """The shell a run starts from: the caller's, cleaned of every knob, plus the variation's."""
    env = {k: v for k, v in os.environ.items() if k not in SHELL_KNOBS and k not in NOISY_ENV and
           not k.startswith(("LC_", "REPRO_"))}
    paths = [str(PACKAGE_DIR.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    # Temporary folders inside the run's own: a build killed on purpose (the resume axis) cannot clean up its
    # /tmp/repro-launch-*, and check removes its work folder whatever happened.
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    env.update(_CLEAN, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)), HF_DATASETS_OFFLINE="1",
               HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1", HF_DATASETS_CACHE=str(work / "hf-datasets-cache"),
               TMPDIR=str(tmp))
    env.update(dict(variation.env))
    return env


def relocate(project: Project, dest: Path) -> tuple[Path, Path, list[str]]:
    """Copy what a clone of the project holds (`repro.builder.clone`) under `dest`.

    Returns (root, config_dir) there, and the files the baseline build read that
    the copy lacks (untracked data or code: a stranger's clone would lack them too).
    The embedded example has no clone: its data and configs ship with repro.
    """
    src = project.source
    if src.embedded:
        files = set(hashed_file_list(src.root, DataSpec.from_config(project.resolved)))
    else:
        from repro.builder.clone import clone_files

        files = set(project.clone if project.clone is not None else clone_files(src.root))
    root = dest / "another place" / src.root.name
    for rel in sorted(files):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src.root / rel, root / rel)
    try:
        config_dir = root / src.config_dir.relative_to(src.root)
    except ValueError:  # configs outside the root (the embedded example's, say)
        config_dir = root / "configs-elsewhere"
    if src.embedded or not config_dir.is_dir():
        shutil.copytree(src.config_dir, config_dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    return root, config_dir, [p for p in project.needed if p not in files and not src.embedded]


def train(project: Project, variation: Variation, trace: tuple[int, Path] | None = None) -> Run:
    """One `repro train` under `variation`, in a fresh process; `trace` = (step, folder) to replay."""
    work = project.folder(variation.axis)
    out_dir = work / "out"
    # From the project root, as its users run it (a project's own modules import from there).
    root, config_dir = project.source.root, project.source.config_dir
    cwd = root
    if variation.relocate:
        root, config_dir, lacking = relocate(project, work)
        cwd = root
        if lacking:
            return Run(out_dir, 0.0, f"a clone of the project lacks {len(lacking)} file(s) the build reads: "
                                     f"{', '.join(lacking[:5])}; they are tracked by neither git nor DVC "
                                     "(`git add` or `dvc add` them)")
    python = str(qemu_python(project.work, variation.prefix[0], project.python)) if variation.qemu else project.python
    prefix = [] if variation.qemu else list(variation.prefix)
    cmd = [*prefix, python, "-m", "repro", "train", "--quiet", "--config-dir", str(config_dir),
           "--config-name", project.source.config_name, "--root", str(root), *project.overrides,
           f"trainer.max_steps={project.steps}", *variation.overrides, f"out_dir={out_dir}"]
    env = environment(variation, work)
    if trace is not None:
        from repro.train.trace import TRACE_DIR_ENV, TRACE_STEP_ENV

        env.update({TRACE_STEP_ENV: str(trace[0]), TRACE_DIR_ENV: str(trace[1])})
    started = time.monotonic()
    error = _interrupt(cmd, cwd, env, variation, out_dir) if variation.interrupt else None
    if error is None:
        error = _run(cmd, cwd, env, variation.umask, work / "stderr.log")
    if error is None and variation.interrupt:
        error = _resumed(out_dir, work / "stderr.log")
    return _collect(out_dir, time.monotonic() - started, error)


def _resumed(out_dir: Path, log: Path) -> str | None:
    """None if the second run resumed from a checkpoint; else why it started over, in its words."""
    import json

    try:
        resumed = json.loads((out_dir / RUN_NAME).read_text(encoding="utf-8")).get("resumed_from")
    except (OSError, ValueError, AttributeError):
        resumed = None
    if resumed:
        return None
    said = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if "checkpoint" in ln]
    return "the second run did not resume: it started over" + (f" ({said[0]})" if said else "")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], umask: int, log: Path) -> str | None:
    with open(log, "wb") as err:  # the build dies with this process; a stop signal is forwarded to it
        done = supervise(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                         umask=umask)
    if done.signum is not None:
        raise Interrupted(done.signum, " during a build of `repro check`")
    if done.code == 0:
        return None
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return f"exit code {done.code}" + (f": {lines[-1].strip()}" if lines else "")


def _interrupt(cmd: list[str], cwd: Path, env: dict[str, str], variation: Variation, out_dir: Path) -> str | None:
    """Start the build, SIGKILL it once the checkpoint named in its overrides is on disk."""
    from repro.train.resume import PAUSE_AFTER_STEP_ENV, pause_marker, wait_released

    every = next(o for o in variation.overrides if o.startswith("trainer.checkpoint_every="))
    step = every.split("=", 1)[1]
    marker = pause_marker(out_dir / CHECKPOINTS_DIR, int(step))
    proc = start(cmd, cwd=cwd, env={**env, PAUSE_AFTER_STEP_ENV: step}, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, umask=variation.umask)
    while not marker.exists():
        if proc.poll() is not None:
            return f"the run ended (exit code {proc.returncode}) before reaching step {step}"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # a power cut: its build child, in a group of its own, dies with it
    proc.wait()
    if not wait_released(out_dir, KILL_GRACE):  # the build child may outlive the parent waited for
        return f"the killed build still held {out_dir.name} {KILL_GRACE} s later"
    return None


def _collect(out_dir: Path, seconds: float, error: str | None) -> Run:
    run = Run(out_dir, round(seconds, 3), error)
    if error is not None:
        return run
    raw = (out_dir / WEIGHTS_NAME).read_bytes()
    run.weights_sha256 = sha256_bytes(raw)
    run.lock = lockfile.read(out_dir / LOCK_NAME)
    run.digests = lockfile.read_step_digests(out_dir, run.lock)
    return run


def profile_of(resolved: JsonObject) -> str:
    return resolve_pins(require(resolved, "build", dict), require(resolved, "seed", int)).profile


__all__ = ["STEPS_NAME", "Run", "profile_of", "train"]
