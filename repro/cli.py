"""The `repro` command line: parse, dispatch, print, and turn exceptions into exit codes.

This is the only place that prints results or errors and decides exit codes.
Each command lives in `repro/commands/<name>.py` and returns an `Outcome`; here
it is printed as text, or with `--json` (which every command takes) as one
envelope on stdout:

    {"version": 1, "command": "verify", "result": {...}, "exit_code": 0}

plus `"error": "one line"` whenever `exit_code` is not 0; `result` is null when
the command failed before it had one. Nothing here imports torch, so
`repro --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import NoReturn, NotRequired, TypedDict

from repro import __version__
from repro.canonical import canonical_json
from repro.commands import Outcome
from repro.errors import EXIT_CODES, ReproError, UserInputError
from repro.lifetime import interruptible
from repro.safeio import printable

ENVELOPE_VERSION = 1

# Command name -> module under repro.commands; modules load only when used.
COMMANDS: dict[str, str] = {
    "train": "Train from a Hydra config and write weights plus repro.lock.",
    "run": "Run one stage declared under stages.NAME and write its stage record.",
    "verify": "Rebuild from a repro.lock and prove the weights bit for bit (exit 0), or say why not.",
    "check": "Build under varied conditions (shell, cores, path, resume, CPU) and name where the bits part.",
    "diff": "Show how two lockfiles differ: inputs, build, outputs.",
    "sign": "Sign a release folder (weights, lock, card) with OpenSSF model-signing.",
    "verify-signature": "Check a release folder's signature without rebuilding.",
    "attest": "Write SLSA provenance (in-toto Statement v1) for a release.",
    "audit": "Rate a release's openness: Debian ML-Policy, OSI OSAID, LF AI MOF, Reproducible.",
    "card": "Write a Hugging Face model card with a loss plot and rebuild commands.",
    "hash": "Print file and root digests of data paths, exactly as repro.lock records them.",
    "dvc-yaml": "Check (or --write) that dvc.yaml's stages agree with the stage declarations.",
    "init": "Create a new project (configs, model package, data, dvc.yaml) that trains and verifies as created.",
}


class UsageError(UserInputError):
    """The command line itself is wrong; argparse has printed the usage."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: {message}")
        self.prog, self.message = prog, message


class _Parser(argparse.ArgumentParser):
    """argparse, except that a bad command line raises (exit 2, and JSON with --json) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(self.prog, message)


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    return f"exit codes:\n{codes}"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `command`, only that command's module is imported.

    The other commands still get a subparser (so `repro --help` and a bad
    command name read the same), without arguments: `main` passes the command
    that argv names, and importing every command module costs a third of the
    start-up of a quick command such as `repro hash` (measured).
    """
    parser = _Parser(
        prog="repro",
        description="Rebuild model weights bit for bit from data, code, config and pinned environment.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"repro {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name, help=summary)
            continue
        module = importlib.import_module(f"repro.commands.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=summary, description=module.__doc__, epilog=_epilog(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.add_argument("--json", action="store_true",
                       help='print one JSON envelope on stdout: {"version", "command", "result", "exit_code"} '
                            'and "error" on failure')
        p.set_defaults(_run=module.run)
    return parser


class Envelope(TypedDict):
    """The one shape of every command's --json output."""

    version: int
    command: str | None
    result: object  # the command's own JSON result (repro.commands.Outcome.result)
    exit_code: int
    error: NotRequired[str]  # on failure: one line


def envelope(command: str | None, result: object, exit_code: int, error: str | None = None) -> Envelope:
    """The one shape of every command's --json output."""
    out: Envelope = {"version": ENVELOPE_VERSION, "command": command, "result": result,
                           "exit_code": exit_code}
    if exit_code != 0:
        out["error"] = error or EXIT_CODES.get(exit_code, f"exit code {exit_code}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run `repro`; return the exit code instead of exiting, so tests can call it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    named = next((a for a in argv if not a.startswith("-")), None)  # the top level takes no option values
    if named is None and "--version" in argv:
        named = ""  # no command module is needed to print the version
    parser = build_parser(named if named in COMMANDS or named == "" else None)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:  # known before parsing: a bad command line is JSON too
        command = next((a for a in argv if a in COMMANDS), None)
        return _fail(command, "--json" in argv, exc.exit_code, str(exc), f"{exc.prog}: error: {exc.message}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    name: str = args.command
    try:
        with interruptible():  # SIGTERM and SIGHUP unwind like Ctrl-C: locks released, temp folders removed
            outcome: Outcome = args._run(args)
            _print(name, outcome, args.json)
        return outcome.exit_code
    except ReproError as exc:
        return _fail(name, args.json, exc.exit_code, str(exc), f"repro {name}: error: {exc}")
    except BrokenPipeError:  # `repro ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as exc:  # repro.errors.Interrupted names the signal and where it stopped
        message = str(exc) or "interrupted"
        return _fail(name, args.json, getattr(exc, "exit_code", 130), message, f"repro {name}: {message}")
    except Exception as exc:  # a bug in repro, not the user's mistake: show everything
        traceback.print_exc()
        return _fail(name, args.json, 70, f"internal error: {type(exc).__name__}: {exc} (traceback on stderr)",
                     f"repro {name}: internal error; please report the traceback above")


def _print(command: str, outcome: Outcome, as_json: bool) -> None:
    if outcome.silent:
        return
    head = envelope(command, outcome.result, outcome.exit_code, outcome.error)
    if as_json and outcome.result_json is not None:
        _write_bytes(_spliced(canonical_json(head), outcome.result_json()))
    elif as_json:
        sys.stdout.write(canonical_json(head).decode("utf-8"))
    elif isinstance(outcome.text, str):
        sys.stdout.write(_printable(outcome.text))
    else:
        sys.stdout.flush()
        outcome.text(sys.stdout.buffer, printable)
    sys.stdout.flush()
    if outcome.stderr:
        sys.stderr.write(_printable(outcome.stderr))


def _spliced(head: bytes, result: Iterator[bytes]) -> Iterator[bytes]:
    """canonical_json(envelope) with a streamed canonical result in place of its `"result": null`.

    The result's own lines move one level in (JSON strings hold no raw newline,
    so every newline is a line break); its trailing newline is dropped.
    """
    before, after = head.split(b'\n  "result": null', 1)
    yield before + b'\n  "result": '
    pending = b""
    for chunk in result:
        if pending:
            yield pending.replace(b"\n", b"\n  ")
        pending = chunk
    yield pending.removesuffix(b"\n").replace(b"\n", b"\n  ") + after


def _write_bytes(chunks: Iterator[bytes]) -> None:
    sys.stdout.flush()
    for chunk in chunks:
        sys.stdout.buffer.write(chunk)


def _printable(text: str) -> str:
    """Human output with control and bidi characters escaped, line by line (JSON escapes its own)."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _fail(command: str | None, as_json: bool, code: int, message: str, line: str) -> int:
    """`line` for people on stderr; with --json, also the envelope (`error`: `message`) on stdout."""
    print(_printable(line), file=sys.stderr)
    if as_json:
        sys.stdout.write(canonical_json(envelope(command, None, code, message)).decode("utf-8"))
        sys.stdout.flush()
    return code
