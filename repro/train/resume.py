"""How a `repro train` starts, saves and stops: the out_dir lock, the choice of checkpoint,
the check that it was made from this very source, the stop at a safe point. No torch.

A resumed run must end in the same bytes as one that never stopped, so a
checkpoint is used only if its recorded inputs, config, pins and packages equal
this run's (checked at start-up), and the source identity of the run that wrote
it (`repro.lock.identity`: the code it imported, its toolchain) equals this run's
(checked once the model is built, before the first step); otherwise we refuse and
name what changed. A stop signal ends a run after a step, with a checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from repro import lifetime
from repro.canonical import canonical_json, compact_json
from repro.errors import Busy, CheckpointError, CheckpointTooOld, Interrupted
from repro.filenames import CHECKPOINTS_DIR, OUT_DIR_LOCK, STATE_NAME
from repro.lock import identity as source_identity
from repro.lock.identity import Boundary, Identity
from repro.lock.lockdiff import Difference, compare_build, compare_files, compare_values, show
from repro.lock.types import ResumeBoundary
from repro.records import CheckpointReport
from repro.source.config import CheckpointSpec
from repro.train import checkpoint
from repro.train.checkpoint import Checkpoint, CheckpointState, RunSource, StepState

Mode = Literal["auto", "restart", "fresh"]
Notify = Callable[[str], None]
Capture = Callable[[], tuple[dict[str, checkpoint.Writer], StepState]]
# With REPRO_PAUSE_AFTER_STEP=N a build pauses after step N and its checkpoint, if one
# is due, until `pause_marker` is deleted: how `repro check --axes resume` (and the
# resume tests) SIGKILL a real build at a known point. Documented in docs/checkpoints.md.
PAUSE_AFTER_STEP_ENV = "REPRO_PAUSE_AFTER_STEP"
PAUSE_LIMIT_S = 600  # a pause nobody ends does not hold a build forever


@dataclass(frozen=True)
class ResumeOptions:
    """`auto`: resume if the checkpoint matches, else refuse; `restart`: else start over;
    `fresh`: always start over (--no-resume). `source`: a checkpoint folder to use instead."""

    mode: Mode = "auto"
    source: Path | None = None


@dataclass
class Session:
    """Checkpointing for one run: `train()` calls `begin` once the model is built, then `after_step`."""

    root: Path
    spec: CheckpointSpec
    record: RunSource | None  # inputs and build this run started from, stored in every checkpoint (rank 0)
    resume: Checkpoint | None = None
    resumes: list[Boundary] = field(default_factory=list)  # earlier boundaries, each with its identity
    skipped: list[str] = field(default_factory=list)
    written: int = 0
    # This run's source identity (repro.lock.identity), taken by `begin`; `identify` takes it.
    identify: Callable[[], Identity] | None = None
    identity: Identity | None = None
    mode: Mode = "auto"
    owner: bool = True  # rank 0: it may delete checkpoints; other ranks only read them
    notify: Notify = field(default=lambda _msg: None)
    # REPRO_PAUSE_AFTER_STEP, read once: the loop calls after_step every step.
    pause_step: str | None = field(default_factory=lambda: os.environ.get(PAUSE_AFTER_STEP_ENV))

    def begin(self) -> Checkpoint | None:
        """Once the model is built and its imports are known, before the first step: take this run's
        source identity (every checkpoint records it) and hold the checkpoint to resume from to it.

        Returns the checkpoint to resume from: none with `--restart` if its source differs.
        """
        if self.identify is not None and (self.spec.every or self.resume is not None):
            self.identity = self.identify()
            if self.resume is not None:
                changed = source_identity.changes(self.resume.state["identity"], self.identity)
                if changed:
                    other_source(self, [_phrase(d) for d in changed])
        if self.resume is not None:
            self.notify(f"resuming from {self.resume.path} (step {self.resume.step})")
        return self.resume

    def after_step(self, step: int, capture: Capture) -> None:
        """Save a checkpoint when one is due; stop (`Interrupted`) if a stop signal came, after saving one."""
        due = bool(self.spec.every) and step % self.spec.every == 0
        if due:
            self._save(step, capture)
        if self.pause_step == str(step):
            wait_while_present(pause_marker(self.root, step), until=lifetime.stop_requested)
        signum = lifetime.stop_requested()
        if signum is None:
            return
        kept = ""
        if self.spec.every:  # checkpointing is on: keep every step done so far
            if not due:
                self._save(step, capture)
            kept = f"; checkpoint {self.root / checkpoint.dir_name(step)} kept: run the same command to resume"
        raise Interrupted(signum, f" after step {step}{kept}")

    def _save(self, step: int, capture: Capture) -> None:
        if self.identity is None:
            raise ValueError("Session.begin must run before the first checkpoint: it takes the source identity")
        if self.record is None:
            raise ValueError("only the session of rank 0, made with the run's source record, writes checkpoints")
        writers, step_state = capture()
        state: CheckpointState = {**step_state, **self.record, "resumes": self.resumes, "identity": self.identity}
        writers[STATE_NAME] = checkpoint.bytes_writer(canonical_json(state))
        checkpoint.write(self.root, step, writers)
        checkpoint.prune(self.root, self.spec.keep)
        self.written += 1

    def lock_resumes(self) -> list[ResumeBoundary] | None:
        """The lock's `build.resumes`: only when some boundary's source was not this run's."""
        return source_identity.boundaries(self.resumes, self.identity)

    def report(self) -> CheckpointReport:
        """What run.json says about checkpoints and resumes (never the lock)."""
        return {
            "checkpoints": {"every": self.spec.every, "keep": self.spec.keep, "written": self.written},
            "resumed_from": None if self.resume is None else {"path": str(self.resume.path), "step": self.resume.step},
            "resumes": [{"step": r["step"], "checkpoint": r["checkpoint"],
                         "source": source_identity.summary(r["identity"])} for r in self.resumes],
            "skipped_checkpoints": self.skipped,
        }


def other_source(session: Session, changed: list[str]) -> None:
    """The checkpoint being resumed was made from another source: refuse, or with `--restart` start over.

    There is no third way: steps trained by other code would sit in weights whose
    lock names this code.
    """
    ckpt = session.resume
    assert ckpt is not None  # only called while a resume is planned
    if session.mode != "restart":
        raise CheckpointError(
            f"{ckpt.path} was made from another source: {_listed(changed)}. Resume with the same source, or pass "
            "--restart to train from step 0 (--no-resume also deletes the checkpoints)")
    session.notify(f"--restart: {ckpt.path.name} was made from another source ({changed[0]}); training from step 0")
    if session.owner:
        checkpoint.clear(session.root)
    session.resume, session.resumes = None, []


def pause_marker(checkpoints: Path, step: int) -> Path:
    """The file a build paused after `step` touches in its checkpoints folder (see PAUSE_AFTER_STEP_ENV)."""
    return checkpoints / f".paused-after-step-{step}"


def wait_while_present(marker: Path, limit_s: float = PAUSE_LIMIT_S,
                       until: Callable[[], object] | None = None) -> None:
    """Touch `marker`, then wait until someone deletes it, `limit_s` passes or `until()` is true."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    deadline = time.monotonic() + limit_s
    while marker.exists() and time.monotonic() < deadline and not (until is not None and until()):
        time.sleep(0.02)


class _StaleLockFile(Exception):
    """We won the flock on a lock file that its last holder had already deleted."""


def _still_named(fd: int, path: Path) -> None:
    """Raise _StaleLockFile unless the file we hold open (`fd`) is still the one at `path`."""
    held = os.fstat(fd)
    try:
        named = os.stat(path)
    except FileNotFoundError:
        raise _StaleLockFile from None
    if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
        raise _StaleLockFile


@contextmanager
def hold_out_dir(out_dir: Path, notify: Notify | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `out_dir` (Busy if another build has it).

    The lock is an flock on `out_dir/.repro-train.lock`, so the kernel drops it
    when its holder dies, even by SIGKILL. The file holds the holder's process id
    (for the messages, never for the decision) and is deleted when the build ends,
    so no stray file is left among the outputs (a release folder, a git or DVC
    tracked directory); a process that opened it just before, and wins the flock
    on the deleted file, sees that it is stale and tries again. A file that a dead
    holder left behind is taken over, and `notify` says so. If this build created
    `out_dir` and fails, the empty folders it made are removed.
    """
    from filelock import FileLock, Timeout

    path = out_dir / OUT_DIR_LOCK
    created = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    left: list[str] = []

    def acquired(fd: int) -> None:
        _still_named(fd, path)
        left[:] = [_pid_in(os.pread(fd, 32, 0))]
        with contextlib.suppress(OSError):  # for the messages only: a full disk fails the build where it writes
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)

    lock = FileLock(str(path), timeout=0, on_acquired=acquired)
    for _ in range(10):
        try:
            lock.acquire()
            break
        except Timeout:
            raise Busy(f"{out_dir}: another `repro train` is running there ({_holder(path)} holds {OUT_DIR_LOCK}); "
                       "wait for it to finish or use another out_dir") from None
        except _StaleLockFile:
            continue
    else:
        raise Busy(f"{out_dir}: could not lock {OUT_DIR_LOCK} (it keeps being replaced); try again")
    if left and left[0] and notify is not None:
        notify(f"{path} was left by process {left[0]}, which is gone: taking it over")
    ok = False
    try:
        yield
        ok = True
    finally:
        path.unlink(missing_ok=True)  # while still holding it; see `_still_named`
        lock.release()
        if not ok:
            for p in created:  # deepest first; stops at the first that is not empty
                try:
                    p.rmdir()
                except OSError:
                    break


def _pid_in(raw: bytes) -> str:
    """The process id a lock file holds, or "" (empty, or not a number: never shown)."""
    text = raw.decode("ascii", "replace").strip()
    return text if text.isdigit() and len(text) < 12 else ""


def _holder(path: Path) -> str:
    """`process N` for the Busy message, read from the lock file; `it` if that cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return "it"
    try:
        pid = _pid_in(os.read(fd, 32)) if stat.S_ISREG(os.fstat(fd).st_mode) else ""
    finally:
        os.close(fd)
    return f"process {pid}" if pid else "it"


def wait_released(out_dir: Path, timeout: float) -> bool:
    """Wait until no process holds `out_dir`'s build lock; False if one still does after `timeout` s.

    For a caller that killed a build and starts the next one in the same out_dir:
    the kernel drops the flock only once its holder is gone, and the build child
    may outlive the parent that was waited for (a loaded machine takes its time
    tearing down a large process), so the next build would find out_dir busy.
    """
    from filelock import FileLock, Timeout

    if not (out_dir / OUT_DIR_LOCK).exists():
        return True
    lock = FileLock(str(out_dir / OUT_DIR_LOCK), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        return False
    lock.release()
    return True


def start(out_dir: Path, spec: CheckpointSpec, record: RunSource, options: ResumeOptions,
          notify: Notify, identify: Callable[[], Identity] | None = None) -> Session:
    """Pick what to resume from (or nothing) and clear what must not be resumed.

    What is picked is checked again by `Session.begin`, against `identify()`.
    """
    root = out_dir / CHECKPOINTS_DIR
    stale = checkpoint.remove_stale(root)
    if stale:
        notify(f"removed unfinished checkpoint writes: {', '.join(stale)}")
    session = Session(root, spec, record, identify=identify, mode=options.mode, notify=notify)
    if options.mode == "fresh":
        if checkpoint.step_dirs(root):
            notify(f"--no-resume: deleting the checkpoints in {root}")
        checkpoint.clear(root)
        return session
    ckpt: Checkpoint | None
    skipped: list[str] = []
    try:
        if options.source is not None:
            ckpt = checkpoint.read(options.source)
        else:
            ckpt, skipped = checkpoint.newest_valid(root)
    except CheckpointTooOld as exc:
        if options.mode != "restart":
            raise CheckpointError(f"{exc}; pass --restart to train from step 0 (--no-resume also deletes the "
                                  "checkpoints)") from None
        notify(f"--restart: {exc}; training from step 0")
        checkpoint.clear(root)
        return session
    for problem in skipped:
        notify(f"warning: skipping checkpoint {problem}")
    session.skipped = skipped
    if ckpt is None:
        checkpoint.clear(root)  # only unusable ones can be here; they must not outlive this run's own
        return session
    changed = changes(ckpt.state, record)
    if changed:
        if options.mode != "restart":
            raise CheckpointError(
                f"{ckpt.path} was made from other inputs: {_listed(changed)}. Resume with the same inputs, or pass "
                "--restart to train from step 0 (--no-resume also deletes the checkpoints)")
        notify(f"--restart: {ckpt.path.name} was made from other inputs ({changed[0]}); training from step 0")
        checkpoint.clear(root)
        return session
    # Checkpoints of another timeline go: unusable ones newer than the resume
    # point, or all of out_dir's when resuming from a folder elsewhere.
    elsewhere = root.resolve() not in ckpt.path.resolve().parents
    for path in checkpoint.step_dirs(root):
        if elsewhere or (checkpoint.parse_step(path.name) or 0) > ckpt.step:
            checkpoint.clear(path)
    session.resume = ckpt
    session.resumes = [*ckpt.state["resumes"],
                       {"step": ckpt.step, "checkpoint": ckpt.path.name, "identity": ckpt.state["identity"]}]
    return session  # `Session.begin` checks it against this run's source identity, then says it resumes


def changes(saved: RunSource, now: RunSource) -> list[str]:
    """What differs between a checkpoint's recorded inputs/build and this run's, one phrase each.

    Found by `repro diff`'s own engine (`repro.lock.lockdiff`), so a checkpoint and a
    lock are compared by one rule; only the wording, about "the checkpoint", is here.
    """
    old_in, new_in = saved["inputs"], now["inputs"]
    diffs = compare_values("inputs", "config", old_in["config"]["resolved"], new_in["config"]["resolved"])
    diffs += compare_files("data", old_in["data"]["files"], new_in["data"]["files"])
    diffs += compare_files("code", old_in["code"]["files"], new_in["code"]["files"])
    old_b, new_b = saved["build"], now["build"]
    diffs += compare_values("build", "package", old_b["packages"], new_b["packages"])
    if not diffs:  # pins come from the config, so they differ only if the above do; be safe
        diffs = compare_build(old_b, new_b)
    out = [_phrase(d) for d in diffs]
    if not out and compact_json(old_in) != compact_json(new_in):
        out.append("the recorded inputs differ")
    return out


_NOUNS = {"config": "config key", "data": "data file", "code": "code file", "repro": "repro source file",
          "compiler": "repro compiler module", "distribution": "package", "torch": "torch build", "pin": "pin"}


def _listed(changed: list[str]) -> str:
    """The first four changes, then how many more."""
    return "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")


def _phrase(d: Difference) -> str:
    what = f"{_NOUNS.get(d.kind, d.kind)} {d.name}"
    if d.change == "changed":
        return f"{what} is {show(d.new)}, the checkpoint has {show(d.old)}"
    if d.change == "renamed":
        return f"{what} was {d.old} in the checkpoint"
    return f"{what} is new" if d.change == "added" else f"{what} is gone"
