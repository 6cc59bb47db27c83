"""Create a new project that trains and verifies as created.

  repro init my-model && cd my-model && repro train && repro verify out/repro.lock

Writes Hydra configs with the project's own `model` and `data` groups, a model
package (a module that imports a helper), a small seeded CSV in data/, a
.gitignore, a dvc.yaml and a short README, and makes the folder a git repository
unless it is inside one (verify finds the project root at the git top level).
No file is overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=".", help="the project folder (default: the current one)")


def run(args: argparse.Namespace) -> int:
    from repro.scaffold import package_name, scaffold

    folder = Path(args.dir)
    written = scaffold(folder)
    print("\n".join(f"created      {folder / rel}" for rel in written), file=sys.stdout)
    print(f"next         cd {folder} && repro train && repro verify out/repro.lock   (model code: "
          f"{package_name(folder)}/)", file=sys.stdout)
    return 0
