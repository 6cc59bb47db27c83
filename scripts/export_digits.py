"""Export scikit-learn's copy of the UCI handwritten digits to CSV, once.

Why a script and not a runtime dependency: the exported file is the example's
*source*; it is committed and hashed. scikit-learn is needed only to re-create it.

    pip install scikit-learn==1.9.1 && python scripts/export_digits.py
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "repro" / "examples" / "digits" / "digits.csv"


def main() -> int:
    from sklearn.datasets import load_digits  # only needed here

    bunch = load_digits()
    header = [f"p{i}" for i in range(64)] + ["label"]
    tmp = OUT.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for row, label in zip(bunch.data, bunch.target):
            writer.writerow([int(v) for v in row] + [int(label)])
    tmp.replace(OUT)
    print(f"wrote {OUT} ({len(bunch.target)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
