"""Write a Hugging Face model card (README.md) with a loss plot (loss.png) and rebuild config.

  repro card out/digits              (or out/digits/repro.lock: a release folder or its lock)
The files go into the release folder.
The card lists the data with digests and licences, the config, the pins, the
audit verdict, and commands that rebuild the weights and check them byte for byte.
"""

from __future__ import annotations

import argparse

from repro.commands import Outcome, add_release_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_release_argument(p)


def run(args: argparse.Namespace) -> Outcome:
    from repro.lock.release_folder import resolve_release
    from repro.trust.model_card import write_card

    report = write_card(resolve_release(args.release))
    verdicts = ", ".join(f"{v.framework}: {v.verdict}" for v in report.audit.verdicts())
    return Outcome(report.to_json(), f"card         {report.card}\nplot         {report.plot}\n"
                   f"rebuild      {report.rebuild_config}\naudit        {verdicts}\n")
