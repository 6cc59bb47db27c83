"""Find what breaks reproducibility before a stranger does, down to the step and the operation.

`repro check [OVERRIDES] [--axes A,B] [--steps N] [--json]` builds the project
once as a baseline and once per variation, each in a fresh process:

  again     nothing varied: a second build, to catch nondeterminism itself
  shell     a noisy shell: thread, ISA and dynamic-thread variables, locale, TZ, umask
  cores     one core (taskset -c 0)
  path      the project at another absolute path, run from another working directory
  hashseed  another PYTHONHASHSEED
  resume    SIGKILL in the middle of the run, then the same command again
  profile   the native profile against the default, or the reverse (reported only)
  world     build.world_size=2 (reported only: another reduction order)
  cpu       other CPU models under qemu-user, when installed (Haswell, Skylake-Server, EPYC, EPYC-Rome;
            cpu:MODEL for one, any model qemu knows)

A variation that differs is localized: the first step whose parameters differ
(from the per-step digests every build records), then that step replayed in
both conditions under a dispatch-level recorder, naming the first differing
aten operation, its module, phase (forward, backward, optimizer), shape, and
how many elements differ by how many ulps.

Exit 0 when every variation the build's profile promises is identical, 1 when
one differs (the default profile promises every axis but profile and world, other
CPU models included; native everything on one machine), 2 for a bad config, 4 when
the baseline cannot train.
The report goes to the config's out_dir as check.json; `repro card` shows it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.commands import Outcome, add_config_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="Hydra overrides, key=value (as for repro train)")
    p.add_argument("--axes", metavar="A,B", help="comma-separated axes (default: all): "
                   "again,shell,cores,path,hashseed,resume,profile,world,cpu")
    p.add_argument("--steps", type=int, default=20, metavar="N",
                   help="train N steps per build (default 20; emulated CPUs run ~30x slower)")
    p.add_argument("--no-localize", action="store_true",
                   help="do not record the builds' ops or name the first differing op")
    add_config_arguments(p, "project root that data and code paths are relative to")
    p.add_argument("--work-dir", metavar="DIR", help="build here and keep every run (default: a temporary folder)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> Outcome:
    from repro.canonical import atomic_write_json
    from repro.check.check_report import CHECK_NAME, CheckOptions, check, parse_axes, render, verdict
    from repro.progress import phase_lines
    from repro.source.compose import compose
    from repro.source.config import find_config

    cwd = Path.cwd()
    source = find_config(args.config_dir, args.config_name, args.root, cwd)
    axes = parse_axes(args.axes)
    with phase_lines("check", args.quiet) as say:
        opts = CheckOptions(source, list(args.overrides), axes, args.steps, localize=not args.no_localize,
                            work_dir=(cwd / args.work_dir).resolve() if args.work_dir else None, progress=say)
        report = check(opts)
    out_dir = (cwd / str(compose(source, list(args.overrides))["out_dir"])).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / CHECK_NAME, report.to_json())
    error = verdict(report) if report.exit_code else None
    return Outcome(report.to_json(), "\n".join(render(report)) + "\n", report.exit_code, error)
