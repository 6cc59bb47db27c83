"""Rate a release's openness: Debian ML-Policy, OSI OSAID 1.0, LF AI MOF, and repro's Reproducible mark.

  repro audit out/digits/repro.lock
  repro audit out/digits --json
The licences and data locations come from the lock's `release` config group;
"Reproducible" needs a verification record from `repro verify` beside the lock.
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
    p.add_argument("--record", help="verification record (default: verification.json beside the lock)")
    p.add_argument("--public-key", help="require the record to be signed with this key (verification.sig)")


def run(args: argparse.Namespace) -> int:
    from repro.trust.audit import audit_path, render_table

    report = audit_path(Path(args.lock), Path(args.record) if args.record else None,
                        Path(args.public_key) if args.public_key else None)
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True, indent=2), file=sys.stdout)
    else:
        sys.stdout.write(render_table(report))
    return 0
