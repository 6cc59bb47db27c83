"""Run one stage declared under `stages.NAME` in the Hydra config, and write its record.

    repro run tokenize
    repro run tokenize tokenize.vocab_size=1024 --config-name smoke   # overrides right after NAME

Inputs, code, config and toolchain are hashed before the stage runs; the stage
runs in a fresh process under the config's `build` pins and `seed`; its outputs
are moved into place atomically and the record (canonical JSON) is written
last. A declared output that was not written, or a file written outside the
declared outputs, is an error naming the path (exit 2). A rerun says what
changed since the last record. See docs/stages.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.commands import Outcome, add_config_arguments
from repro.records import FilesBlock


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the stage to run (a key under `stages:` in the config)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, key=value (the same ones `repro train` takes)")
    add_config_arguments(p, "project root that input and output paths are relative to")
    p.add_argument("--rehash", action="store_true", help="re-read every input byte instead of trusting the stat cache")
    p.add_argument("--quiet", action="store_true", help="hide the stage's own output")


def run(args: argparse.Namespace) -> Outcome:
    from repro.builder.stage import run_stage, stage_pins
    from repro.environment.pins import resolve_pins
    from repro.errors import ConfigError
    from repro.source.compose import compose
    from repro.source.config import find_config, require
    from repro.source.stages import stage_specs

    source = find_config(args.config_dir, args.config_name, args.root, Path.cwd())
    resolved = compose(source, args.overrides)
    specs = stage_specs(resolved)
    if args.name not in specs:
        known = ", ".join(specs) or "none"
        raise ConfigError(f"config key stages.{args.name}: no such stage (declared: {known})")
    pins = resolve_pins(require(resolved, "build", dict), require(resolved, "seed", int))
    report = run_stage(specs[args.name], stage_pins(pins), source.root, use_cache=not args.rehash,
                       quiet=args.quiet)
    rec = report.record
    lines = [f"stage        {report.name} ({rec['declared']['target']})",
             f"inputs       {_files(rec['inputs'])}, root sha256 {rec['inputs']['root_digest']}",
             f"code         {_files(rec['code'])}, root sha256 {rec['code']['root_digest']}"]
    lines += [f"output       {f['path']}  sha256 {f['hashes']['sha256']}" for f in rec["outputs"]["files"]]
    lines += [f"record       {report.record_path}", f"time         {report.seconds:.1f} s"]
    if not report.first_run:
        lines.append("since the last record: " + ("nothing changed" if not report.changes else
                                                  f"{len(report.changes)} changes"))
        lines += ["  " + d.line() for d in report.changes]
    result = {"stage": report.name, "record_path": str(report.record_path), "record": rec,
              "seconds": round(report.seconds, 3), "first_run": report.first_run,
              "changes": [d.to_json() for d in report.changes]}
    return Outcome(result, "\n".join(lines) + "\n")


def _files(block: FilesBlock) -> str:
    n = len(block["files"])
    return f"{n} file{'' if n == 1 else 's'}"
