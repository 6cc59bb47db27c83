"""Write SLSA Provenance v1 (an in-toto Statement v1) for a release: provenance.intoto.json in its folder.

  repro attest out/digits            (or out/digits/repro.lock: a release folder or its lock)
The build definition comes from repro.lock (config, pins, data, code, packages),
the run details from run.json. Sign it with the rest: `repro sign out/digits --key ...`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.commands import Outcome, add_release_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_release_argument(p)
    p.add_argument("--output", help="where to write the statement (default: provenance.intoto.json in the release "
                                    "folder)")
    p.add_argument("--builder-id", help="URI of the build platform (default: repro's local builder)")


def run(args: argparse.Namespace) -> Outcome:
    from repro.canonical import atomic_write_json, sha256_bytes
    from repro.filenames import PROVENANCE_NAME
    from repro.lock.release_folder import resolve_release
    from repro.trust.provenance import LOCAL_BUILDER_ID, attest

    release = resolve_release(args.release)
    stmt = attest(release, args.builder_id or LOCAL_BUILDER_ID)
    target = Path(args.output) if args.output else release.folder / PROVENANCE_NAME
    sha256 = sha256_bytes(atomic_write_json(target, stmt))
    subject = stmt["subject"][0]
    deps = stmt["predicate"]["buildDefinition"]["resolvedDependencies"]
    result = {"provenance": str(target), "sha256": sha256, "subject": subject, "resolved_dependencies": len(deps)}
    return Outcome(result, f"provenance   {target}  sha256 {sha256}\n"
                   f"subject      {subject['name']}  sha256 {subject['digest']['sha256']}\n"
                   f"depends on   {len(deps)} resolved dependencies (data, code, repro, packages)\n")
