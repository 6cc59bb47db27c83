"""Train from a Hydra config; write model.safetensors, metrics.jsonl, run.json and repro.lock.

Overrides are Hydra's: `repro train model.hidden=128 trainer.max_steps=300 seed=7`.
With no `configs/` folder in the current directory and no --config-dir, the
example embedded in the package is trained.

An out_dir holding checkpoints (trainer.checkpoint_every) is resumed from its
newest valid one, and the result is bit-identical to a run that never stopped;
if the inputs, config or pins changed since, it refuses and names the change.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repro.commands import Outcome, add_config_arguments
from repro.errors import ConfigError
from repro.source.hydra_app import INFO_CHOICES

if TYPE_CHECKING:
    from repro.source.config import ConfigSource


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Our -h/--help replaces argparse's: it also lists the config groups, as a Hydra app's does.
    p.conflict_handler = p._optionals.conflict_handler = "resolve"
    p.add_argument("-h", "--help", action="store_true", help="show this help, the config groups and the config")
    p.set_defaults(_parser=p)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, key=value")
    p.add_argument("-m", "--multirun", action="store_true",
                   help="sweep: one build per combination of comma-separated values (Hydra's sweeper)")
    p.add_argument("--cfg", "-c", choices=["job", "hydra", "all"], help="print the composed config and exit")
    p.add_argument("--resolve", action="store_true", help="with --cfg or --help: resolve interpolations")
    p.add_argument("--package", "-p", help="with --cfg: print only this node of the config")
    p.add_argument("--info", "-i", nargs="?", const="all", choices=list(INFO_CHOICES),
                   help="print Hydra's information (search path, defaults, config groups) and exit")
    add_config_arguments(p, "project root that data and code paths are relative to")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--rehash", action="store_true",
                   help="re-read every data byte instead of trusting the stat cache in .repro/")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-resume", action="store_true", help="start from step 0, deleting out_dir's checkpoints")
    g.add_argument("--restart", action="store_true",
                   help="resume if the checkpoints match this run's inputs, else start from step 0")
    g.add_argument("--resume-from", metavar="DIR", help="resume from this checkpoint folder (safetensors + JSON)")


def run(args: argparse.Namespace) -> Outcome:
    from repro.source.config import find_config

    cwd = Path.cwd()
    source = find_config(args.config_dir, args.config_name, args.root, cwd)
    if args.help or args.cfg or args.info:
        return _inspect(args, source)
    if args.resolve or args.package:
        raise ConfigError("--resolve and --package go with --cfg (or --resolve with --help)")
    if args.multirun:
        return _sweep(args, source)
    return _train(args, source, cwd)


def _inspect(args: argparse.Namespace, source: ConfigSource) -> Outcome:
    from repro.source import hydra_app

    if args.help:
        try:
            groups = hydra_app.help_text(source, args.overrides)
        except ConfigError as exc:  # a broken config must not hide the flags
            groups = f"(the config groups cannot be listed: {exc})\n"
        text = args._parser.format_help() + "\n" + groups
    elif args.cfg:
        text = hydra_app.show_cfg(source, args.overrides, args.cfg, args.package, args.resolve)
    else:
        text = hydra_app.show_info(source, args.overrides, args.info)
    return Outcome(text, text)


def _sweep(args: argparse.Namespace, source: ConfigSource) -> Outcome:
    from repro.builder.sweep import run_sweep

    if args.resume_from or args.no_resume or args.restart:
        raise ConfigError("--multirun: each job resumes its own out_dir; --resume-from, --no-resume and "
                          "--restart apply to a single build")
    report = run_sweep(source, args.overrides, quiet=args.quiet, rehash=args.rehash)
    lines = []
    for job in report.summary["jobs"]:
        lines.append(f"job {job['num']:<3} {' '.join(job['overrides']):<40} {_job_result(job)}")
    failed = sum(job["status"] != "ok" for job in report.summary["jobs"])
    lines.append(f"sweep        {report.summary_path}  ({len(report.summary['jobs']) - failed} ok, {failed} failed)")
    result = {"summary": str(report.summary_path), **report.summary}
    error = f"{failed} of {len(report.summary['jobs'])} jobs failed" if report.exit_code else None
    return Outcome(result, "\n".join(lines) + "\n", report.exit_code, error)


def _job_result(job: dict[str, Any]) -> str:
    """A sweep job in one line: its final loss and held-out metrics, and its lock's digest (or why it failed)."""
    if job["status"] != "ok":
        return f"FAILED (exit {job['exit_code']}): {job['error']}"
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(job["metrics"].items()))
    loss = "n/a" if job["final_loss"] is None else f"{job['final_loss']:.4f}"
    return f"final loss {loss}" + (f"  held-out {metrics}" if metrics else "") + f"  lock {job['lock_sha256'][:12]}…"


def _train(args: argparse.Namespace, source: ConfigSource, cwd: Path) -> Outcome:
    from repro.builder.launch import launch
    from repro.builder.spec import make_spec
    from repro.source.compose import compose
    from repro.source.composed import ConfigFiles
    from repro.source.config import require
    from repro.source.project_import import refuse_shadowing
    from repro.train.resume import ResumeOptions

    resolved = compose(source, args.overrides)
    config = ConfigFiles.of(source, args.overrides)
    # The root and out_dir are resolved here, once; the build reads them from the spec.
    out_dir = (cwd / require(resolved, "out_dir", str)).resolve()
    options = ResumeOptions(mode="fresh" if args.no_resume else "restart" if args.restart else "auto",
                            source=(cwd / args.resume_from).resolve() if args.resume_from else None)
    spec = make_spec(resolved, source.root.resolve(), out_dir, resume=options, config=config, rehash=args.rehash,
                     quiet=args.quiet)
    refuse_shadowing(spec.root)  # a root-level json.py would never be imported: say so, before anything runs
    report = launch(spec)
    if report is None:  # a rank other than 0 under torchrun / accelerate launch: rank 0 reports
        return Outcome(None, "", silent=True)
    lines = [
        f"out_dir      {report.out_dir}",
        f"weights      sha256 {report.weights_sha256}",
        f"repro.lock   sha256 {report.lock_sha256}",
        f"config       sha256 {report.config_sha256}",
        f"data root    sha256 {report.data_root_digest}",
    ]
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(report.metrics.items()))
    lines.append(f"final loss   {report.final_loss:.6f}" + (f"   held-out: {metrics}" if metrics else ""))
    lines.append(f"time         {report.seconds:.1f} s")
    if report.resumed_from_step is not None:
        lines.append(f"resumed      at step {report.resumed_from_step}")
    lines += [f"sample {i}     {text!r}" for i, text in enumerate(report.samples, 1)]
    result = {
        "out_dir": str(report.out_dir), "weights_sha256": report.weights_sha256, "lock_sha256": report.lock_sha256,
        "config_sha256": report.config_sha256, "data_root_digest": report.data_root_digest,
        "final_loss": report.final_loss, "metrics": report.metrics, "seconds": report.seconds,
        "resumed_from_step": report.resumed_from_step, "samples": list(report.samples),
    }
    return Outcome(result, "\n".join(lines) + "\n")

