"""Rate a release's openness: Debian ML-Policy, OSI OSAID 1.0, LF AI MOF, and repro's Reproducible mark.

  repro audit out/digits/repro.lock
  repro audit out/digits --json
The licences and data locations come from the lock's `release` config group;
"Reproducible: yes" needs verification records (from `repro verify --signing-key`)
signed by keys you name with --trusted-key, from at least --threshold distinct
signers; an unsigned record reads "self-reported".
Criteria: docs/openness.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.commands import Outcome, add_release_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_release_argument(p)
    p.add_argument("--record", action="append", metavar="FILE",
                   help="a verification record to weigh (repeatable; default: verification.json and "
                        "verifications/*.json beside the lock)")
    p.add_argument("--trusted-key", action="append", metavar="KEY", default=[],
                   help="a PEM public key whose signatures on verification records you trust (repeatable)")
    p.add_argument("--threshold", type=int, default=1, metavar="K",
                   help="distinct trusted signers needed for Reproducible: yes (default 1)")


def run(args: argparse.Namespace) -> Outcome:
    from repro.lock.release_folder import resolve_release
    from repro.trust.release_audit import audit_path, render_table

    report = audit_path(resolve_release(args.release).lock, [Path(r) for r in args.record] if args.record else None,
                        [Path(k) for k in args.trusted_key], args.threshold)
    return Outcome(report.to_json(), render_table(report))
