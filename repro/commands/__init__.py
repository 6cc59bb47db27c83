"""One module per `repro` command: `add_arguments(parser)` and `run(args) -> Outcome`.

A command never prints its result: it returns an `Outcome`, and `repro/cli.py`
prints either `text` (for people) or, with `--json`, one envelope around
`result`. Progress and notes go to stderr as they happen.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

# Writes human output to a binary stream, passing every untrusted string (a path)
# through the escaping function it is given (cli.py gives `safeio.printable`).
TextWriter = Callable[[BinaryIO, Callable[[str], str]], None]
RELEASE_HELP = "a release folder (the out_dir `repro train` wrote) or its lock file (repro.lock)"


@dataclass(frozen=True)
class Outcome:
    """What a command did.

    `result` is JSON-able and becomes the envelope's `result`; `text` is printed
    without --json (control characters escaped), or is a `TextWriter` that
    streams it; a non-zero `exit_code` that was not raised as an exception
    (verify's mismatch, diff's "differ") comes with a one-line `error`.
    `result_json`, when given, streams the result as canonical JSON chunks
    instead of `result` (too large to hold twice). `stderr` is printed on stderr
    after the result (a summary); `silent` prints nothing at all (a rank other
    than 0: rank 0 reports).
    """

    result: Any
    text: str | TextWriter
    exit_code: int = 0
    error: str | None = None
    stderr: str = ""
    silent: bool = False
    result_json: Callable[[], Iterator[bytes]] | None = None


def add_release_argument(p: argparse.ArgumentParser) -> None:
    """The positional that verify, audit, sign, verify-signature, attest and card share."""
    p.add_argument("release", metavar="PATH", help=RELEASE_HELP)


def add_config_arguments(p: argparse.ArgumentParser, root_help: str) -> None:
    """The flags that find a project's Hydra config: train, check, run and dvc-yaml share them."""
    p.add_argument("--config-dir", help="folder holding the project's Hydra configs (default: ./configs)")
    p.add_argument("--config-name", default="train", help="config file name without .yaml (default: train)")
    p.add_argument("--root", help=root_help)
