"""One process tree, one lifetime: stop signals in repro's processes, and children that die with their parent.

A `repro` command (the parent): `interruptible()` turns SIGINT, SIGTERM and SIGHUP
into `repro.errors.Interrupted` for the whole command, so `with` blocks release the
out_dir lock and remove temp folders on the way out. `supervise()` runs a child
process (a build, a stage, a sweep's job) and forwards those signals to it; it
raises nothing itself: its caller learns which signal came and raises once the
child has stopped. A third signal kills the child outright.

A child (a build, a stage): `stop_on_signals()` at start-up. A signal raises
`Interrupted` at once, except inside `deferred()` (the training steps), where it
only asks to stop: the loop stops at the next step boundary, after a checkpoint
(`repro.train.resume.Session.after_step`). A second signal raises at once
wherever it lands.

Every child is started in its own process group, so a terminal's Ctrl-C reaches
only the top `repro` process, which forwards it once (and Ctrl-Z, which stops the
child's group along with it); and the kernel kills it when its parent dies, even
by SIGKILL (Linux `PR_SET_PDEATHSIG`). A signal that was
ignored when the process started (`nohup`, a background job of a script) stays
ignored, in the parent and so in its children. No torch here.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from repro.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
KILL_AFTER = 3  # the parent's third stop signal SIGKILLs the child: it is stuck, and the user insists
_PR_SET_PDEATHSIG = 1
Handler = Callable[[int, Any], None]


# ---- the parent --------------------------------------------------------------------------------------------


@contextmanager
def interruptible() -> Iterator[None]:
    """Around a whole command: a stop signal raises `Interrupted` where the main thread is."""
    def stop(signum: int, _frame: Any) -> None:
        raise Interrupted(signum)

    previous = _install(stop)
    try:
        yield
    finally:
        _restore(previous)


@dataclass(frozen=True)
class Finished:
    """A supervised child's exit status, and the first stop signal forwarded to it (None: none came)."""

    code: int
    signum: int | None
    stdout: Any = None
    stderr: Any = None


def supervise(cmd: Sequence[str], **popen: Any) -> Finished:
    """Run `cmd` to its end as a child that cannot outlive this process; forward stop signals to it.

    `popen` goes to `subprocess.Popen` (cwd, env, std streams, umask, text). The
    signals stay blocked from just before the fork until the child is known, so
    none is lost or sent twice; the child unblocks them before it execs.
    """
    received: list[int] = []
    child: list[subprocess.Popen[Any]] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if child:
            if len(received) >= KILL_AFTER:
                _send(child[0].pid, signal.SIGKILL)
            else:
                _send(command_pid(child[0].pid), signum)

    def pause(_signum: int, _frame: Any) -> None:
        """Ctrl-Z: stop the child's group (it is not in the terminal's), then ourselves; `fg` resumes both."""
        if child:
            _send_group(child[0].pid, signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until SIGCONT
        signal.signal(signal.SIGTSTP, pause)
        if child:
            _send_group(child[0].pid, signal.SIGCONT)

    previous = _install(forward)
    blocked = _block(previous)
    previous.update(_install(pause, (signal.SIGTSTP,)))
    try:
        try:
            proc = subprocess.Popen(list(cmd), preexec_fn=_child_setup(os.getpid()), **popen)
            child.append(proc)
        finally:
            _unblock(blocked)  # a signal that came meanwhile is handled here, and forwarded
        out, err = proc.communicate()
    except BaseException:
        if child and child[0].poll() is None:
            child[0].kill()
            child[0].wait()
        raise
    finally:
        _restore(previous)
    return Finished(proc.returncode, received[0] if received else None, out, err)


def start(cmd: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen` for a child that the caller watches itself; it too dies with this process."""
    return subprocess.Popen(list(cmd), preexec_fn=_child_setup(os.getpid()), **popen)


def _child_setup(parent: int) -> Callable[[], None]:
    """What the child runs between fork and exec (nothing that imports or locks: it is a forked copy)."""
    prctl = _prctl()

    def setup() -> None:
        if os.getpgid(0) != os.getpid():  # not already a group (or session) leader: start_new_session
            os.setpgid(0, 0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before the line above: follow it now
                os.kill(os.getpid(), signal.SIGKILL)

    return setup


def die_with_parent() -> None:
    """In a process started by another (a torchrun rank, a build child): SIGKILL it when its parent dies."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@lru_cache(maxsize=1)
def _prctl() -> Callable[[int, int], int] | None:
    """libc's prctl, loaded before any fork (Linux); None elsewhere."""
    try:
        prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# A sandbox that runs the command in a process of its own and forwards no signal: bubblewrap. A stop
# signal sent to it would kill it, and its --die-with-parent would SIGKILL the command before the
# command could stop after a step and say where it stopped.
_NON_FORWARDING = frozenset({"bwrap"})


def command_pid(pid: int) -> int:
    """The process that runs the command under `pid`: `pid` itself, or, below a sandbox that forwards
    no signal, its only child (followed down). `pid` while the sandbox has not started it yet."""
    for _ in range(8):  # bwrap, then bwrap's reaper (pid 1 in its namespace), then the command
        try:
            name = Path(f"/proc/{pid}/comm").read_text(encoding="ascii", errors="replace").strip()
            below = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii").split()
        except OSError:
            return pid
        if name not in _NON_FORWARDING or len(below) != 1:
            return pid
        pid = int(below[0])
    return pid


def _send(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited; `communicate` collects it
        os.kill(pid, signum)


def _send_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


# ---- the child ---------------------------------------------------------------------------------------------

_received: list[int] = []  # stop signals this process has received, in order
_deferring = [0]  # depth of `deferred()` blocks


def stop_on_signals() -> None:
    """In a child, first thing: stop signals raise `Interrupted`, or inside `deferred()` ask to stop."""
    _install(_on_stop)


def _on_stop(signum: int, _frame: Any) -> None:
    _received.append(signum)
    if _deferring[0] and len(_received) == 1:
        return  # the loop stops at its next safe point
    raise Interrupted(signum)


def stop_requested() -> int | None:
    """The stop signal received, if one was (in a child that called `stop_on_signals`)."""
    return _received[0] if _received else None


def raise_if_stopped(detail: str = "") -> None:
    """At a safe point: raise `Interrupted` if a stop signal came."""
    if _received:
        raise Interrupted(_received[0], detail)


@contextmanager
def deferred(finish: bool = False) -> Iterator[None]:
    """Inside this block a first stop signal only asks to stop (see `raise_if_stopped`).

    When the block ends normally with a stop asked for, `Interrupted` is raised,
    unless `finish`: the block was the last of the work (writing the outputs), and
    the process goes on to end as if no signal had come.
    """
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
    if not finish and not _deferring[0]:
        raise_if_stopped()


# ---- handlers ----------------------------------------------------------------------------------------------


def _install(handler: Handler, signals: Sequence[int] = STOP_SIGNALS) -> dict[int, Any]:
    """Set `handler` for each of `signals` not ignored here; the handlers it replaced, to restore.

    Only the main thread may set handlers; elsewhere (a test calling `main` in a
    thread) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}
    for sig in signals:
        current = signal.getsignal(sig)
        if current is signal.SIG_IGN:
            continue
        previous[sig] = current
        signal.signal(sig, handler)
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _block(installed: dict[int, Any]) -> set[int]:
    """Block the handled stop signals (the ones `_install` set) in this thread; those newly blocked."""
    if not installed:
        return set()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, installed)
    return set(installed) - {int(s) for s in before}


def _unblock(blocked: set[int]) -> None:
    if blocked:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
