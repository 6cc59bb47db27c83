"""One exception hierarchy; the CLI maps each class to its documented exit code.

Library code raises these and never prints or exits, so it stays callable from
tests and other programs.
"""

from __future__ import annotations

import errno


class ReproError(Exception):
    """Base class. `exit_code` is what `repro` exits with when this escapes."""

    exit_code = 2


class UserInputError(ReproError):
    """Input we cannot use: a bad config, a missing file, a malformed lockfile."""

    exit_code = 2


class ConfigError(UserInputError):
    """The Hydra config could not be composed or fails validation."""


class DataError(UserInputError):
    """A data file is missing, unreadable, or not local."""


class LockfileError(UserInputError):
    """A lockfile is malformed, of an unknown version, or names unsafe paths."""


class CheckpointError(UserInputError):
    """A checkpoint cannot be used: corrupt, pickled, or made from other inputs."""


class CheckpointTooOld(CheckpointError):
    """A checkpoint of an earlier format, without the source identity of the run that wrote it.

    Not skipped like a damaged one: resuming is refused (exit 2) until the user chooses `--restart`.
    """


class MismatchError(ReproError):
    """Something that should be bit-identical is not (verify, diff)."""

    exit_code = 1


class EnvironmentMismatch(ReproError):
    """This machine cannot honour the recorded pins (torch build, CPU level)."""

    exit_code = 3


class TrainingFailed(ReproError):
    """Training itself failed at run time (a rank died, loss became NaN, ...)."""

    exit_code = 4


class Busy(ReproError):
    """Another process holds the out_dir lock."""

    exit_code = 5


class OutputError(ReproError):
    """An output or checkpoint could not be written: no space, permission denied, read-only filesystem.

    Nothing partial is left: writes go to a temp file that is removed, so an earlier
    good output of the same name survives.
    """

    exit_code = 6


# errno -> the words a user searches for; any other OSError on a write is named by its strerror.
_WRITE_CAUSES = {
    errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this filesystem or the process's file-size limit",
    errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only filesystem",
}


def is_write_failure(exc: BaseException) -> bool:
    """An OSError of the kinds that `output_error` names (no space, permission, read-only, ...)."""
    return isinstance(exc, OSError) and exc.errno in _WRITE_CAUSES


def output_error(exc: OSError, path: object = None) -> OutputError:
    """One line naming the path that could not be written (`path`, else the error's) and why."""
    where = path if path is not None else exc.filename if exc.filename is not None else \
        "a temporary or output file (the OS did not say which)"
    code = errno.errorcode.get(exc.errno or 0, "")
    cause = _WRITE_CAUSES.get(exc.errno or 0, exc.strerror or str(exc))
    return OutputError(f"{where}: cannot write: {cause}" + (f" ({code})" if code else ""))


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) ended the command; exit 128 + the signal's number.

    A KeyboardInterrupt, not a ReproError: no `except ReproError` or `except Exception`
    on the way up may swallow it (a sweep must not go on to its next job, `check` must
    not file it as a failed build). `repro.lifetime` raises it; the CLI prints its one line.
    """

    def __init__(self, signum: int, detail: str = "") -> None:
        self.signum, self.detail = signum, detail
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal_name(signum)}{detail}")


def signal_name(signum: int) -> str:
    """`SIGTERM` for 15; `signal N` for a number this Python has no name for."""
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def from_exit_code(code: int, message: str) -> ReproError:
    """Rebuild the typed error a child process (a rank, a rebuild) reported as code + message."""
    classes: dict[int, type[ReproError]] = {1: MismatchError, 3: EnvironmentMismatch, 4: TrainingFailed, 5: Busy,
                                            6: OutputError}
    exc = classes.get(code, UserInputError)(message)
    exc.exit_code = code
    return exc


# The one exit-code table: `repro --help` prints it, and README.md's "Exit codes"
# table must list exactly these rows (tests/test_docs.py checks both).
EXIT_CODES: dict[int, str] = {
    0: "success (for verify: bit-identical)",
    1: "mismatch: something differs from the lockfile; a report says what",
    2: "unusable input: config, data file, lockfile, path or command line (one line names it)",
    3: "verify: only the toolchain differs and the bits do too; or this machine cannot honour the pins "
       "(CPU level, device, precision, world size) or install the recorded toolchain",
    4: "training failed at run time (loss became NaN, a rank died)",
    5: "out_dir is locked by another running build",
    6: "an output or checkpoint could not be written: no space, permission denied, read-only filesystem "
       "(one line names the path and the cause)",
    70: "internal error: a bug in repro (the traceback is shown; please report it)",
    129: "interrupted by SIGHUP (the terminal closed); checkpoints are kept, the same command resumes",
    130: "interrupted by SIGINT (Ctrl-C); checkpoints are kept, the same command resumes",
    143: "interrupted by SIGTERM; checkpoints are kept, the same command resumes",
}
