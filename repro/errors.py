"""One exception hierarchy; the CLI maps each class to its documented exit code.

Library code raises these and never prints or exits, so it stays callable from
tests and other programs.
"""

from __future__ import annotations


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


def from_exit_code(code: int, message: str) -> ReproError:
    """Rebuild the typed error a child process (a rank, a rebuild) reported as code + message."""
    classes: dict[int, type[ReproError]] = {1: MismatchError, 3: EnvironmentMismatch, 4: TrainingFailed, 5: Busy}
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
       "(CPU level) or install the recorded toolchain",
    4: "training failed at run time (loss became NaN, a rank died)",
    5: "out_dir is locked by another running build",
    70: "internal error: a bug in repro (the traceback is shown; please report it)",
    130: "interrupted",
}
