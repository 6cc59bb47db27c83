"""Start one build in child processes: the one launcher `repro train` and `repro verify` share.

A child is the only way to guarantee the pins: `ATEN_CPU_CAPABILITY` is read once,
when torch is first imported, and the parent's shell may carry OMP_NUM_THREADS,
MKL_* or CUDA_VISIBLE_DEVICES. One world size runs a plain interpreter; more run
torchrun's ranks, whose agent stops every rank as soon as one dies, so a crash
cannot hang the others. A rank that an outside launcher started (`torchrun -m
repro train`, `accelerate launch`) starts one plain child of its own, with the
launcher's variables passed on (they are in the allowlist). Either way the child
runs `python -m repro.builder SPEC` (`repro.builder.build.child_main`): whatever
started repro, the build process is the same program, importing the same
modules. The child answers through one result file beside its spec
(`repro.builder.error_file`): its report (exit code 0), or a user-facing failure
as exit code + message, which `repro.errors.from_exit_code` turns back into the
same typed error.

This module names no build function, so the build modules can import it without a cycle.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from repro.builder.error_file import read_result
from repro.canonical import atomic_write_json
from repro.environment.kernels import library
from repro.environment.pins import Pins, pinned_environ
from repro.errors import EnvironmentMismatch, Interrupted, ReproError, TrainingFailed, from_exit_code
from repro.lifetime import Finished, supervise
from repro.source.inputs import PACKAGE_DIR
from repro.train import distributed

# Where the build child finds repro's portable kernels (repro.train.kernels reads it).
LIBRARY_VARIABLE = "REPRO_PORTABLE_LIBRARY"
# `python -m repro.builder SPEC` runs repro/builder/__main__.py, which calls build.child_main.
CHILD_MODULE = "repro.builder"
# The child's result (report or error) is RESULT_NAME beside its SPEC_NAME.
SPEC_NAME, RESULT_NAME, LOG_NAME = "child-spec.json", "child-result.json", "child-stderr.log"


@dataclass(frozen=True)
class ChildOptions:
    """How the launching process runs a build child; none of it reaches the bits.

    `what` ("rebuild") starts error messages; `own_cache` and `python`: see
    `child_environ`; `prefix` wraps the command (a sandbox, repro.builder.sandbox);
    `env_extra` is added to the child's environment (the op recorder's REPRO_TRACE_* variables).
    """

    what: str = ""
    own_cache: bool = False
    python: str | None = None
    prefix: tuple[str, ...] = ()
    env_extra: tuple[tuple[str, str], ...] = ()
_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)[^\n]*", re.S)


def child_environ(pins: Pins, work_dir: Path, own_cache: bool = False, python: str | None = None) -> dict[str, str]:
    """The whole environment a build child runs under; the one place it is made.

    An allowlist of the shell plus the pins (`pinned_environ`): no thread, ISA,
    dynamic-thread or hash-seed variable is inherited. The child imports the same
    repro whose source was hashed (PYTHONPATH names it and nothing else), unless
    `python` is another environment's interpreter (`verify --toolchain recreate`),
    which must use its own installed repro (and builds repro's portable kernels against its own
    torch). With `own_cache` (verify) the datasets
    cache is the child's own, so no stale cache can stand in for the data.
    """
    env = pinned_environ(pins)
    if python is None:
        env["PYTHONPATH"] = str(PACKAGE_DIR.parent)
        if pins.kernels == "portable":  # built here, once per toolchain; the child only loads it
            env[LIBRARY_VARIABLE] = str(library()[0])
    elif pins.kernels == "portable":  # another toolchain's torch: the child builds them, in its work folder
        env["REPRO_KERNEL_CACHE"] = str(work_dir / "kernels")
    if own_cache:
        env["HF_DATASETS_CACHE"] = str(work_dir / "hf-datasets-cache")
    env["TORCHELASTIC_ERROR_FILE"] = str(work_dir / "elastic-error.json")
    return env


def child_command(pins: Pins, spec_path: Path, python: str | None = None) -> list[str]:
    """A plain interpreter for one process, or for one rank that an outside launcher started; torchrun's ranks
    for more."""
    exe = python or sys.executable
    if pins.world_size == 1 or distributed.under_launcher():
        return [exe, "-m", CHILD_MODULE, str(spec_path)]
    return [exe, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={pins.world_size}",
            "--max-restarts=0", "--monitor-interval=0.2", "-m", CHILD_MODULE, str(spec_path)]


def run_child(spec: object, pins: Pins, work_dir: Path, *, quiet: bool = True,
              options: ChildOptions | None = None) -> object:
    """Run the build child on `spec` (a BuildSpec's JSON) under `pins`; return the report it sent.

    Progress goes to the terminal unless `quiet` or several ranks run (torchrun's
    report is parsed from stderr), and repro's own messages (`repro train: resuming
    from ...`) always do. The child dies with this process, so a killed `repro train`
    leaves no build running, and a stop signal sent to this process is forwarded to
    it (`repro.lifetime.supervise`): it stops at its next safe point, and
    `Interrupted` is raised here once it has. A failure the child reported is raised
    as its typed error.
    """
    options = options or ChildOptions()
    spec_path, result_path, log = work_dir / SPEC_NAME, work_dir / RESULT_NAME, work_dir / LOG_NAME
    result_path.unlink(missing_ok=True)
    atomic_write_json(spec_path, spec)
    shown = not quiet and pins.world_size == 1
    env = {**child_environ(pins, work_dir, options.own_cache, options.python), **dict(options.env_extra)}
    with open(log, "wb") as err:
        done = supervise([*options.prefix, *child_command(pins, spec_path, options.python)], cwd=work_dir, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=None if shown else err)
    stderr = log.read_text(errors="replace") if log.is_file() else ""
    for line in stderr.splitlines():
        if line.startswith(MESSAGE_PREFIX):
            print(line, file=sys.stderr, flush=True)
    if done.code != 0:
        # torchrun's agent stops the other ranks with SIGTERM when one dies: their report of that
        # signal is not the user's; only one forwarded from here is.
        agent = pins.world_size > 1 and not distributed.under_launcher()
        raise_interrupted(done, result_path, options.what, child_signals=not agent)
        raise child_error(done.code, result_path, stderr, pins, options.what)
    return read_result(result_path).get("report")


# What the child prints for the user (resume decisions, warnings); relayed by run_child.
MESSAGE_PREFIX = "repro train: "


def child_message(message: str) -> None:
    """In the child: one line for the user, shown whether or not its stderr is."""
    print(MESSAGE_PREFIX + message, file=sys.stderr, flush=True)


def raise_interrupted(done: Finished, error_path: Path, what: str = "", child_signals: bool = True) -> None:
    """Raise `Interrupted` if a stop signal ended the child: one forwarded to it, or (with
    `child_signals`) one it got itself.

    Where the child stopped comes from its error file, when it wrote one.
    """
    info = read_result(error_path)
    signum = done.signum if done.signum is not None else info.get("signal") if child_signals else None
    if not isinstance(signum, int):
        return
    detail = info.get("detail") if isinstance(info.get("detail"), str) else ""
    raise Interrupted(signum, (f" during the {what}" if what else "") + str(detail))


def child_error(code: int, error_path: Path, stderr: str, pins: Pins, what: str) -> ReproError:
    """The typed error of a failed child: its own report, else what killed it.

    A report of a stop signal that is no interruption of ours (torchrun stopping the
    other ranks after one died) says nothing: what killed the first rank does.
    """
    info = read_result(error_path)
    if info.get("exit_code") and "signal" not in info:
        return from_exit_code(int(info["exit_code"]), (f"{what}: " if what else "") + str(info["message"]))
    what = what or "build"
    rank = None
    if pins.world_size > 1 and (m := _ROOT_CAUSE.search(stderr)):
        rank, code = int(m.group(1)), int(m.group(2))
    if code == -signal.SIGILL:
        return EnvironmentMismatch(f"the {what} died with SIGILL: this CPU cannot run cpu_capability "
                                   f"{pins.cpu_capability!r}")
    if rank is not None:
        return TrainingFailed(f"rank {rank} of {pins.world_size} died ({exit_name(code)}); torchrun stopped the "
                              "other ranks, no outputs were written (checkpoints, if any, can be resumed)")
    tail = [ln.strip() for ln in stderr.splitlines() if ln.strip()][-1:]
    return TrainingFailed(f"the {what} process failed ({exit_name(code)}); no outputs were written"
                          + (f": {tail[0]}" if tail else ""))


def exit_name(code: int) -> str:
    """`SIGKILL` for a process killed by a signal (negative code), else `exit code N`."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return signal.Signals(-code).name
    except ValueError:  # a signal number this Python has no name for
        return f"signal {-code}"
