"""Rebuild a model from its repro.lock and prove it bit for bit, or say exactly why not.

Checks, cheapest first: the lock itself; the source (data, the recorded project
code, config) re-hashed under the project root, and the recorded toolchain
compared with this one (--inputs-only stops here, without importing torch or
anything the lock names); a weights file (--weights, or the one beside the lock);
whether this machine can honour the pins; then a rebuild in a fresh process
under the lock's pins (`--toolchain recreate`: in a fresh environment holding the
recorded toolchain), compared with the lock tensor by tensor. See docs/verify.md.

The project root defaults to the git repository holding the lockfile, or else
the nearest folder above it that holds the lock's data (see docs/verify.md).

verify exits 0 when bit-identical (toolchain drift, if any, is noted), 1 when the
source differs or the same source and toolchain give other bits, 2 when the input
is unusable (malformed or unknown-version lock, missing data file, a path escaping
the root), 3 when only the toolchain differs and the bits do too, or when this
machine cannot honour the pins or install the recorded toolchain.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from repro.commands import Outcome, add_release_argument

if TYPE_CHECKING:
    from repro.progress import PhaseReport


# verify's switches, each off unless given (a table: one line each, the same action).
_SWITCHES = (
    ("--allow-env-drift", "rebuild even if another torch build is installed than the lock's"),
    ("--rebuild-anyway", "rebuild even when the inputs already differ, to see how the outputs differ"),
    ("--no-record", "do not write verification.json beside the lock after a rebuild"),
    ("--localize", "on a mismatch, replay the first differing step where this machine can reproduce the lock's "
                   "(an emulated CPU under qemu-user) and name the first differing operation"),
    ("--trust-code", "run `_target_`s the lock names outside the trusted set (project code hashed in the lock, "
                     "repro's own, torch.nn/torch.optim/transformers classes); see docs/security.md"),
    ("--no-sandbox", "rebuild without cutting the network and making the project read-only (unshare)"),
    ("--allow-oversubscribe", "rebuild even if the pins ask for more than 4 threads per core of this machine"),
    ("--recursive", "a fine-tune: go on to verify its base release's lock (inputs.base), and that one's base"),
    ("--quiet", "no progress display"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_release_argument(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--inputs-only", action="store_true",
                   help="re-hash data, code and config against the lock and stop (no rebuild, no torch)")
    g.add_argument("--from-source", action="store_true",
                   help="copy the primary sources to a work folder, rerun every recorded stage comparing each "
                        "output with its record, then rebuild the training")
    p.add_argument("--weights", metavar="FILE", help="check this weights file against the lock's digests")
    p.add_argument("--work-dir", metavar="DIR", help="rebuild here and keep it (default: a temporary folder)")
    p.add_argument("--root", metavar="DIR",
                   help="project root the lock's paths are relative to (default: the git repository holding "
                        "the lockfile)")
    p.add_argument("--signing-key", metavar="KEY", help="sign verification.json with this private key (model-signing)")
    p.add_argument("--world-size", type=int, metavar="N",
                   help="rebuild with N processes instead of the lock's (not expected to be bit-identical)")
    p.add_argument("--toolchain", choices=("current", "recreate"), default="current",
                   help="rebuild with this environment's toolchain (current, the default), or in a fresh one that "
                        "holds exactly the lock's (recreate; cached by its digest in the user's cache folder)")
    p.add_argument("--find-links", metavar="DIR", action="append", default=[],
                   help="with --toolchain recreate: also install wheels from DIR (repeatable), e.g. an unreleased "
                        "repro")
    p.add_argument("--trust-verification", action="append", default=[], metavar="KEY",
                   help="with --recursive: accept a base whose verification.json is signed by this public key "
                        "instead of rebuilding it (repeatable)")
    for flag, text in _SWITCHES:
        p.add_argument(flag, action="store_true", help=text)


def run(args: argparse.Namespace) -> Outcome:
    from repro.progress import phase_lines

    with phase_lines("verify", args.quiet or args.json) as say:
        return _verify(args, say)


def _verify(args: argparse.Namespace, say: PhaseReport) -> Outcome:
    from repro.errors import UserInputError
    from repro.lock.release_folder import resolve_release
    from repro.verify.recursive import chain_json, chain_ok, verify_chain
    from repro.verify.render import mismatch_line, render
    from repro.verify.report import VerifyOptions
    from repro.verify.verifier import verify

    opts = VerifyOptions(
        lock_path=resolve_release(args.release).lock, root=Path(args.root) if args.root else None,
        inputs_only=args.inputs_only,
        weights=Path(args.weights) if args.weights else None, work_dir=Path(args.work_dir) if args.work_dir else None,
        allow_env_drift=args.allow_env_drift, rebuild_anyway=args.rebuild_anyway, quiet=args.quiet or args.json,
        record=not args.no_record, signing_key=Path(args.signing_key) if args.signing_key else None,
        world_size=args.world_size, trust_code=args.trust_code, allow_oversubscribe=args.allow_oversubscribe,
        sandbox=not args.no_sandbox, localize=args.localize,
        toolchain=args.toolchain, find_links=tuple(Path(d) for d in args.find_links), progress=say,
    )
    if args.trust_verification and not args.recursive:
        raise UserInputError("--trust-verification needs --recursive: it decides how a base model is verified")
    if args.recursive and args.from_source:
        raise UserInputError("--recursive and --from-source: verify the base chain and the stage chain separately")
    if not args.recursive:
        if args.from_source:
            from repro.verify.fromsource import verify_from_source

            report = verify_from_source(opts)
        else:
            report = verify(opts)
        error = None if report.identical else mismatch_line(report)
        return Outcome(report.to_json(), "\n".join(render(report)) + "\n", report.exit_code, error)
    report, links = verify_chain(opts, [Path(k) for k in args.trust_verification])
    ok = report.identical and chain_ok(links)
    text = "\n".join([*render(report), "chain (this lock, then its base, and the base's base):",
                      *("  " + link.line() for link in links),
                      "OK: the whole chain is verified" if ok else "FAILED: the chain is not verified"]) + "\n"
    error = None if ok else "the chain of base models is not verified" if report.identical else mismatch_line(report)
    return Outcome({**report.to_json(), "chain": chain_json(links), "exit_code": 0 if ok else 1}, text,
                   0 if ok else 1, error)

