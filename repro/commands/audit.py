"""Rate a release's openness: Debian ML-Policy, OSI OSAID 1.0, LF AI MOF, and repro's Reproducible mark.

  repro audit out/digits/repro.lock
  repro audit out/digits --json
The licences and data locations come from the lock's `release` config group;
"Reproducible" needs a verification record from `repro verify` beside the lock.
Criteria: docs/openness.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.commands import Outcome, add_release_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_release_argument(p)
    p.add_argument("--record", help="verification record (default: verification.json beside the lock)")
    p.add_argument("--public-key", help="require the record to be signed with this key (verification.sig)")


def run(args: argparse.Namespace) -> Outcome:
    from repro.lock.release_folder import resolve_release
    from repro.trust.audit import audit_path, render_table

    report = audit_path(resolve_release(args.release).lock, Path(args.record) if args.record else None,
                        Path(args.public_key) if args.public_key else None)
    return Outcome(report.to_json(), render_table(report))
