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
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("lock", help="repro.lock, or the folder holding it")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--record", action="append", metavar="FILE",
                   help="a verification record to weigh (repeatable; default: verification.json and "
                        "verifications/*.json beside the lock)")
    p.add_argument("--trusted-key", action="append", metavar="KEY", default=[],
                   help="a PEM public key whose signatures on verification records you trust (repeatable)")
    p.add_argument("--threshold", type=int, default=1, metavar="K",
                   help="distinct trusted signers needed for Reproducible: yes (default 1)")


def run(args: argparse.Namespace) -> int:
    from repro.trust.audit import audit_path, render_table

    report = audit_path(Path(args.lock), [Path(r) for r in args.record] if args.record else None,
                        [Path(k) for k in args.trusted_key], args.threshold)
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True, indent=2), file=sys.stdout)
    else:
        sys.stdout.write(render_table(report))
    return 0
