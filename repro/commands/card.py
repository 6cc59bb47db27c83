"""Write a Hugging Face model card (OUT_DIR/README.md) with a loss plot (loss.png) and rebuild config.

  repro card out/digits
The card lists the data with digests and licences, the config, the pins, the
audit verdict, and commands that rebuild the weights and check them byte for byte.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="the release folder (holds repro.lock and metrics.jsonl)")


def run(args: argparse.Namespace) -> int:
    from repro.safeio import printable
    from repro.trust.card import write_card

    report = write_card(Path(args.out_dir))
    verdicts = ", ".join(f"{v.framework}: {v.verdict}" for v in report.audit.verdicts())
    lines = [f"card         {report.card}", f"plot         {report.plot}", f"rebuild      {report.rebuild_config}",
             f"audit        {verdicts}"]
    print("\n".join(printable(line) for line in lines), file=sys.stdout)
    return 0
