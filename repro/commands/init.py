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
from pathlib import Path

from repro.commands import Outcome


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=".", help="the project folder (default: the current one)")


def run(args: argparse.Namespace) -> Outcome:
    from repro.scaffold import package_name, scaffold

    folder = Path(args.dir)
    written = scaffold(folder)
    lines = [f"created      {folder / rel}" for rel in written]
    lines.append(f"next         cd {folder} && repro train && repro verify out/repro.lock   (model code: "
                 f"{package_name(folder)}/)")
    result = {"folder": str(folder), "created": [str(rel) for rel in written], "package": package_name(folder)}
    return Outcome(result, "\n".join(lines) + "\n")
