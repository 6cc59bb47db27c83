"""How a `repro train` starts and saves its progress: the out_dir lock, the choice of
checkpoint, the check that it was made from these very inputs. No torch.

A resumed run must end in the same bytes as one that never stopped, so a
checkpoint is used only if its recorded inputs, config, pins and packages equal
this run's; otherwise we refuse and name what changed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from repro.canonical import canonical_json, compact_json
from repro.errors import Busy, CheckpointError
from repro.filenames import CHECKPOINTS_DIR, OUT_DIR_LOCK, STATE_NAME
from repro.lock.diff import Difference, compare_build, compare_files, compare_values, show
from repro.source.config import CheckpointSpec
from repro.train import checkpoint
from repro.train.checkpoint import Checkpoint

Mode = Literal["auto", "restart", "fresh"]
Notify = Callable[[str], None]
Capture = Callable[[], tuple[dict[str, checkpoint.Writer], dict[str, Any]]]
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
    """Checkpointing for one run; `train()` calls `after_step` after every step."""

    root: Path
    spec: CheckpointSpec
    record: dict[str, Any]  # inputs and build this run started from, stored in every checkpoint
    resume: Checkpoint | None = None
    resumes: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    written: int = 0
    # REPRO_PAUSE_AFTER_STEP, read once: the loop calls after_step every step.
    pause_step: str | None = field(default_factory=lambda: os.environ.get(PAUSE_AFTER_STEP_ENV))

    def after_step(self, step: int, capture: Capture) -> None:
        if self.spec.every and step % self.spec.every == 0:
            writers, state = capture()
            state.update(self.record, resumes=self.resumes)
            writers[STATE_NAME] = checkpoint.bytes_writer(canonical_json(state))
            checkpoint.write(self.root, step, writers)
            checkpoint.prune(self.root, self.spec.keep)
            self.written += 1
        if self.pause_step == str(step):
            wait_while_present(pause_marker(self.root, step))

    def report(self) -> dict[str, Any]:
        """What run.json says about checkpoints and resumes (never the lock)."""
        return {
            "checkpoints": {"every": self.spec.every, "keep": self.spec.keep, "written": self.written},
            "resumed_from": None if self.resume is None else {"path": str(self.resume.path), "step": self.resume.step},
            "resumes": self.resumes,
            "skipped_checkpoints": self.skipped,
        }


def pause_marker(checkpoints: Path, step: int) -> Path:
    """The file a build paused after `step` touches in its checkpoints folder (see PAUSE_AFTER_STEP_ENV)."""
    return checkpoints / f".paused-after-step-{step}"


def wait_while_present(marker: Path, limit_s: float = PAUSE_LIMIT_S) -> None:
    """Touch `marker`, then wait until someone deletes it (or `limit_s` passes)."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    deadline = time.monotonic() + limit_s
    while marker.exists() and time.monotonic() < deadline:
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
def hold_out_dir(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out_dir` (Busy if another build has it).

    The lock is an flock on `out_dir/.repro-train.lock`, so the kernel drops it
    when its holder dies, even by SIGKILL. The file is deleted when the build
    ends, so no stray file is left among the outputs (a release folder, a git or
    DVC tracked directory); a process that opened it just before, and wins the
    flock on the deleted file, sees that it is stale and tries again. If this
    build created `out_dir` and fails, the empty folders it made are removed.
    """
    from filelock import FileLock, Timeout

    path = out_dir / OUT_DIR_LOCK
    created = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0, on_acquired=lambda fd: _still_named(fd, path))
    for _ in range(10):
        try:
            lock.acquire()
            break
        except Timeout:
            raise Busy(f"{out_dir}: another `repro train` is running there (it holds {OUT_DIR_LOCK}); "
                       "wait for it to finish or use another out_dir") from None
        except _StaleLockFile:
            continue
    else:
        raise Busy(f"{out_dir}: could not lock {OUT_DIR_LOCK} (it keeps being replaced); try again")
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


def start(out_dir: Path, spec: CheckpointSpec, record: dict[str, Any], options: ResumeOptions,
          notify: Notify) -> Session:
    """Pick what to resume from (or nothing) and clear what must not be resumed."""
    root = out_dir / CHECKPOINTS_DIR
    stale = checkpoint.remove_stale(root)
    if stale:
        notify(f"removed unfinished checkpoint writes: {', '.join(stale)}")
    session = Session(root, spec, record)
    if options.mode == "fresh":
        if checkpoint.step_dirs(root):
            notify(f"--no-resume: deleting the checkpoints in {root}")
        checkpoint.clear(root)
        return session
    ckpt: Checkpoint | None
    skipped: list[str] = []
    if options.source is not None:
        ckpt = checkpoint.read(options.source)
    else:
        ckpt, skipped = checkpoint.newest_valid(root)
    for problem in skipped:
        notify(f"warning: skipping checkpoint {problem}")
    session.skipped = skipped
    if ckpt is None:
        checkpoint.clear(root)  # only unusable ones can be here; they must not outlive this run's own
        return session
    changed = changes(ckpt.state, record)
    if changed:
        if options.mode != "restart":
            shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
            raise CheckpointError(
                f"{ckpt.path} was made from other inputs: {shown}. Resume with the same inputs, or pass "
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
    session.resumes = [*ckpt.state["resumes"], {"step": ckpt.step, "checkpoint": ckpt.path.name}]
    notify(f"resuming from {ckpt.path} (step {ckpt.step})")
    return session


def changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's recorded inputs/build and this run's, one phrase each.

    Found by `repro diff`'s own engine (`repro.lock.diff`), so a checkpoint and a
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


_NOUNS = {"config": "config key", "data": "data file", "code": "code file", "repro": "repro source file"}


def _phrase(d: Difference) -> str:
    what = f"{_NOUNS.get(d.kind, d.kind)} {d.name}"
    if d.change == "changed":
        return f"{what} is {show(d.new)}, the checkpoint has {show(d.old)}"
    if d.change == "renamed":
        return f"{what} was {d.old} in the checkpoint"
    return f"{what} is new" if d.change == "added" else f"{what} is gone"
