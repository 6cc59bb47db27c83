"""repro.lifetime on plain processes (no torch): signals forwarded, children that die with their parent.

The build, stage and verify children are tested end to end in test_signals.py;
here each rule is checked on a small Python child, fast.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO

from repro import lifetime
from repro.errors import Interrupted

# A child that reports the signal it got: exits 100 + its number (or 0 after 60 s).
CATCHER = textwrap.dedent("""\
    import signal, sys, time
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda n, f: sys.exit(100 + n))
    open(sys.argv[1], "w").close()
    time.sleep(60)
""")


def _alive(pid: int) -> bool:
    """Running (a zombie that nobody reaped has exited: it holds no lock, runs no code)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _signal_when_ready(ready: Path, signum: int) -> threading.Thread:
    """Send `signum` to this process once the child has touched `ready` (from a thread: the main one waits)."""
    def send() -> None:
        _wait_for(ready.exists, 60, "the child never started")
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_supervise_forwards_a_stop_signal_to_the_child_and_reports_it(tmp_path: Path, signum: int) -> None:
    ready = tmp_path / "ready"
    before = signal.getsignal(signum)
    sender = _signal_when_ready(ready, signum)
    done = lifetime.supervise([sys.executable, "-c", CATCHER, str(ready)])
    sender.join()
    assert (done.code, done.signum) == (100 + signum, signum)  # the child got it once, and ended
    assert signal.getsignal(signum) is before  # our own handler is back


def test_the_child_runs_in_its_own_process_group_with_the_signals_unblocked(tmp_path: Path) -> None:
    code = ("import os, signal; blocked = signal.pthread_sigmask(signal.SIG_BLOCK, []); "
            "print(os.getpgid(0) == os.getpid(), sorted(int(s) for s in blocked))")
    done = lifetime.supervise([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert done.code == 0 and done.stdout.split(None, 1) == ["True", "[]\n"]


def test_a_child_dies_with_its_parent_even_when_the_parent_is_killed(tmp_path: Path) -> None:
    """The parent starts a child through repro.lifetime and is SIGKILLed: the kernel kills the child too."""
    pid_file = tmp_path / "child.pid"
    parent = textwrap.dedent(f"""\
        import sys, time
        from repro import lifetime
        child = lifetime.start([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        _wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the parent never started its child")
        child = int(pid_file.read_text())
        assert _alive(child)
        proc.kill()
        proc.wait()
        _wait_for(lambda: not _alive(child), 5, "the child outlived its SIGKILLed parent by 5 s")
    finally:
        proc.kill()


def test_interruptible_turns_sigterm_into_interrupted_and_restores_the_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught, lifetime.interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here, at once
    assert caught.value.exit_code == 143 and str(caught.value) == "interrupted by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_ignored_at_start_stays_ignored() -> None:
    """`nohup repro train`: a hangup must not stop the build, in the parent or in its children."""
    code = textwrap.dedent("""\
        import os, signal, sys
        from repro import lifetime
        with lifetime.interruptible():
            os.kill(os.getpid(), signal.SIGHUP)
            done = lifetime.supervise([sys.executable, "-c",
                                       "import signal; print(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN)"])
        print("survived", done.code)
    """)
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN), capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", "survived", "0"]


def test_deferred_holds_a_first_signal_until_a_safe_point_and_a_second_raises_at_once() -> None:
    """The build child's rule, in a process of its own (its handlers stay for its life)."""
    code = textwrap.dedent("""\
        import os, signal
        from repro import lifetime
        from repro.errors import Interrupted
        lifetime.stop_on_signals()
        try:
            with lifetime.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                print("held", lifetime.stop_requested() == signal.SIGTERM, flush=True)
                lifetime.raise_if_stopped(" after step 3")
        except Interrupted as exc:
            print(exc, flush=True)
        try:
            with lifetime.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                print("not reached")
        except Interrupted as exc:
            print("second:", exc.exit_code)
    """)
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.splitlines() == ["held True", "interrupted by SIGTERM after step 3", "second: 130"]


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_ctrl_z_stops_the_childs_group_with_the_parent_and_fg_resumes_both(tmp_path: Path) -> None:
    """The child is not in the terminal's process group, so the parent passes job control on.

    The parent gets a process group of its own in this session, as a shell's job does: in an
    orphaned group (an xdist worker's) the kernel discards a stop signal, and then nothing stops.
    """
    pid_file = tmp_path / "child.pid"
    parent = textwrap.dedent(f"""\
        import sys
        from repro import lifetime
        child = [sys.executable, "-c", "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                 "time.sleep(120)"]
        lifetime.supervise(child)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=os.setpgrp)
    try:
        _wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the child never started")
        child = int(pid_file.read_text())
        proc.send_signal(signal.SIGTSTP)
        _wait_for(lambda: _state(proc.pid) == "T" and _state(child) == "T", 30, "Ctrl-Z did not stop both")
        proc.send_signal(signal.SIGCONT)  # what the shell's `fg` sends the parent's group
        _wait_for(lambda: _state(proc.pid) != "T" and _state(child) != "T", 30, "fg did not resume both")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # supervise returned: the child ended by the forwarded SIGTERM
        _wait_for(lambda: not _alive(child), 5, "the child outlived its parent")
    finally:
        proc.kill()
