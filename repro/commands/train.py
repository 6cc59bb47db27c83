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
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="Hydra overrides, key=value")
    p.add_argument("--config-dir", help="folder holding the project's Hydra configs (default: ./configs)")
    p.add_argument("--config-name", default="train", help="config file name without .yaml (default: train)")
    p.add_argument("--root", help="project root that data and code paths are relative to")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--rehash", action="store_true",
                   help="re-read every data byte instead of trusting the stat cache in .repro/")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-resume", action="store_true", help="start from step 0, deleting out_dir's checkpoints")
    g.add_argument("--restart", action="store_true",
                   help="resume if the checkpoints match this run's inputs, else start from step 0")
    g.add_argument("--resume-from", metavar="DIR", help="resume from this checkpoint folder (safetensors + JSON)")


def run(args: argparse.Namespace) -> int:
    from repro.build.run import run_build
    from repro.source.config import compose, find_config, require
    from repro.train.resume import ResumeOptions

    cwd = Path.cwd()
    source = find_config(args.config_dir, args.config_name, args.root, cwd)
    resolved = compose(source, args.overrides)
    out_dir = (cwd / require(resolved, "out_dir", str)).resolve()
    options = ResumeOptions(mode="fresh" if args.no_resume else "restart" if args.restart else "auto",
                            source=(cwd / args.resume_from).resolve() if args.resume_from else None)
    report = run_build(resolved, source.root, out_dir, quiet=args.quiet, resume=options, notify=_note,
                       rehash=args.rehash)
    if report is None:  # a rank other than 0 under torchrun / accelerate launch: rank 0 reports
        return 0
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
    print("\n".join(lines), file=sys.stdout)
    return 0


def _note(message: str) -> None:
    print(f"repro train: {message}", file=sys.stderr, flush=True)
