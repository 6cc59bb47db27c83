"""Write SLSA Provenance v1 (an in-toto Statement v1) for a release: OUT_DIR/provenance.intoto.json.

The build definition comes from repro.lock (config, pins, data, code, packages),
the run details from run.json. Sign it with the rest: `repro sign OUT_DIR --key ...`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="the release folder (holds repro.lock, model.safetensors, run.json)")
    p.add_argument("--output", help="where to write the statement (default: OUT_DIR/provenance.intoto.json)")
    p.add_argument("--builder-id", help="URI of the build platform (default: repro's local builder)")


def run(args: argparse.Namespace) -> int:
    from repro.canonical import atomic_write_json, sha256_bytes
    from repro.trust.provenance import LOCAL_BUILDER_ID, PROVENANCE_NAME, attest

    out_dir = Path(args.out_dir)
    stmt = attest(out_dir, args.builder_id or LOCAL_BUILDER_ID)
    target = Path(args.output) if args.output else out_dir / PROVENANCE_NAME
    data = atomic_write_json(target, stmt)
    subject = stmt["subject"][0]
    deps = stmt["predicate"]["buildDefinition"]["resolvedDependencies"]
    print(f"provenance   {target}  sha256 {sha256_bytes(data)}\n"
          f"subject      {subject['name']}  sha256 {subject['digest']['sha256']}\n"
          f"depends on   {len(deps)} resolved dependencies (data, code, repro, packages)", file=sys.stdout)
    return 0
