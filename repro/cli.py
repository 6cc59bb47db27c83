"""The `repro` command line: parse, dispatch, and turn exceptions into exit codes.

This is the only place that prints errors or decides exit codes. Each command
lives in `repro/commands/<name>.py` and returns an int. Nothing here imports
torch, so `repro --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from repro import __version__
from repro.errors import EXIT_CODES, ReproError
from repro.safeio import printable

# Command name -> module under repro.commands; modules load only when used.
COMMANDS: dict[str, str] = {
    "train": "Train from a Hydra config and write weights plus repro.lock.",
    "verify": "Rebuild from a repro.lock and prove the weights bit for bit (exit 0), or say why not.",
    "diff": "Show how two lockfiles differ: inputs, build, outputs.",
    "sign": "Sign a release folder (weights, lock, card) with OpenSSF model-signing.",
    "verify-signature": "Check a release folder's signature without rebuilding.",
    "attest": "Write SLSA provenance (in-toto Statement v1) for a release.",
    "audit": "Rate a release's openness: Debian ML-Policy, OSI OSAID, LF AI MOF, Reproducible.",
    "card": "Write a Hugging Face model card with a loss plot and rebuild commands.",
    "hash": "Print file and root digests of data paths, exactly as repro.lock records them.",
    "init": "Create a new project (configs, model package, data, dvc.yaml) that trains and verifies as created.",
}


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    return f"exit codes:\n{codes}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repro",
        description="Rebuild model weights bit for bit from data, code, config and pinned environment.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"repro {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        module = importlib.import_module(f"repro.commands.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=summary, description=module.__doc__, epilog=_epilog(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `repro`; return the exit code instead of exiting, so tests can call it."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code: int = args._run(args)
        return code
    except ReproError as exc:
        print(f"repro {args.command}: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `repro ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"repro {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug in repro, not the user's mistake: show everything
        traceback.print_exc()
        print(f"repro {args.command}: internal error; please report the traceback above", file=sys.stderr)
        return 70
