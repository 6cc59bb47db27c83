"""`repro init`: the files of a new project that trains and verifies as created. No torch.

The project owns its model (a package with a module that imports a helper), its
data and its `model` and `data` config groups; everything else comes from repro's
shipped groups through Hydra's search path, so its config holds only what it
changes. `repro train` puts the project root first on the import path and hashes
every project module the build imports, so nothing needs listing or installing.
"""

from __future__ import annotations

import keyword
import random
import re
import subprocess
from pathlib import Path

from repro.canonical import atomic_write_bytes
from repro.errors import UserInputError
from repro.filenames import DVC_YAML_NAME

FEATURES, CLASSES, ROWS, SEED = 8, 3, 240, 20261201


def package_name(folder: Path) -> str:
    """A Python package name from the project folder's name (`my-model` -> `my_model`)."""
    name = re.sub(r"\W+", "_", folder.resolve().name.lower()).strip("_")
    if not name or name[0].isdigit() or keyword.iskeyword(name) or name in {"repro", "torch", "data", "test"}:
        name = f"project_{name}".rstrip("_") if name else "project"
    return name


def sample_data() -> str:
    """A small seeded CSV: 240 rows, 8 integer features in 0..16, 3 classes around distinct centres."""
    rng = random.Random(SEED)
    centres = [[rng.randint(2, 14) for _ in range(FEATURES)] for _ in range(CLASSES)]
    lines = [",".join([f"f{i}" for i in range(FEATURES)] + ["label"])]
    for row in range(ROWS):
        label = row % CLASSES
        feats = [min(16, max(0, c + rng.randint(-3, 3))) for c in centres[label]]
        lines.append(",".join(str(v) for v in [*feats, label]))
    return "\n".join(lines) + "\n"


def files(pkg: str) -> dict[str, str]:
    """Relative path -> text of every file `repro init` writes."""
    return {
        "configs/train.yaml": TRAIN_YAML.format(pkg=pkg),
        "configs/model/net.yaml": MODEL_YAML.format(pkg=pkg, features=FEATURES, classes=CLASSES),
        "configs/data/local.yaml": DATA_YAML,
        f"{pkg}/__init__.py": f'"""{pkg}: the project\'s own model code, hashed into every lock it builds."""\n',
        f"{pkg}/net.py": NET_PY.format(pkg=pkg),
        f"{pkg}/blocks.py": BLOCKS_PY,
        "data/train.csv": sample_data(),
        ".gitignore": GITIGNORE,
        DVC_YAML_NAME: DVC_YAML.format(pkg=pkg),
        "README.md": README_MD.format(pkg=pkg),
    }


def scaffold(folder: Path) -> list[str]:
    """Write a new project into `folder` (created if needed); return the paths written.

    Refuses (exit 2) to overwrite any file, so it cannot clobber a project.
    """
    pkg = package_name(folder)
    planned = files(pkg)
    taken = [rel for rel in planned if (folder / rel).exists()]
    if taken:
        raise UserInputError(f"{folder / taken[0]}: already exists; repro init writes only into a new or empty "
                             "project folder")
    for rel, text in planned.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / rel, text.encode("utf-8"))
    return list(planned) + git_init(folder)


def git_init(folder: Path) -> list[str]:
    """Make the project a git repository (as `cargo new` does), unless it is inside one or git is missing.

    `repro verify` finds a lock's project root at the git top level, and the lock's
    data and code are what a commit of this folder holds.
    """
    try:
        inside = subprocess.run(["git", "-C", str(folder), "rev-parse", "--is-inside-work-tree"],
                                capture_output=True, text=True, check=False)
        if inside.returncode == 0:
            return []
        subprocess.run(["git", "init", "-q", str(folder)], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return [".git/"]


TRAIN_YAML = """\
# Train:   repro train                      (writes out/model.safetensors and out/repro.lock)
# Verify:  repro verify out/repro.lock      (rebuilds in a fresh process; exit 0 = bit-identical)
# Change anything on the command line:  repro train model.hidden=64 trainer.max_steps=200 seed=1
# Groups `data` and `model` are this project's (configs/); `task`, `trainer` and
# `build` come from the ones shipped with repro. Keys below override them.
defaults:
  - data: local
  - model: net
  - task: classification
  - trainer: default
  - build: default
  - _self_

hydra:
  searchpath:
    - pkg://repro.configs

seed: 0
out_dir: out
trainer:
  max_steps: 120
  batch_size: 32
  log_every: 10
  checkpoint_every: 0
"""

MODEL_YAML = """\
# The project's own model: {pkg}/net.py (which imports {pkg}/blocks.py). Both files
# are hashed into the lock because the build imports them; nothing to list.
_target_: {pkg}.net.TinyNet
in_features: {features}
hidden: 32
out_features: {classes}
depth: 2
"""

DATA_YAML = """\
# The training data: a CSV whose `label` column is the class. Paths are relative
# to the project root; every byte is hashed into the lock.
builder: csv
data_files:
  - data/train.csv
test_fraction: 0.2
split_seed: 1234
"""

NET_PY = '''\
"""The model `repro train` builds from configs/model/net.yaml."""

from __future__ import annotations

import torch
from torch import nn

from {pkg}.blocks import ResidualBlock


class TinyNet(nn.Module):
    """An input layer, `depth` residual blocks of width `hidden`, and a classifier head."""

    def __init__(self, in_features: int, hidden: int, out_features: int, depth: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(in_features, hidden)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden) for _ in range(depth)])
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.blocks(torch.relu(self.inp(x))))
        return out
'''

BLOCKS_PY = '''\
"""Building blocks of the project's model (imported by net.py, so hashed too)."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """x + Linear(ReLU(Linear(x)))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.fc2(torch.relu(self.fc1(x)))
        return out
'''

# What git must not hold: build outputs except the lock (a clone verifies against it; the
# weights go to a DVC remote or a model hub), repro's stat cache, bytecode.
GITIGNORE = """\
/out/*
!/out/repro.lock
.repro/
__pycache__/
"""

# Exactly what `repro dvc-yaml --write` writes for this project (tests/test_project.py checks it):
# the data, the model package, and each config file composed into the build.
DVC_YAML = """\
# `dvc repro` trains; `dvc.lock` then pins the data, code and the weights, and
# `repro verify out/repro.lock` proves the weights rebuild bit for bit.
# After adding a stage under `stages:` in configs/train.yaml: `repro dvc-yaml --write`.
stages:
  train:
    cmd: repro train --quiet
    deps:
    - data/train.csv
    - {pkg}
    - configs/data/local.yaml
    - configs/model/net.yaml
    - configs/train.yaml
    outs:
    - out/model.safetensors
    - out/metrics.jsonl
    - out/repro.lock:
        cache: false
"""

README_MD = """\
# A repro project

Weights rebuilt bit for bit from this folder: data in `data/`, the model in
`{pkg}/`, the training config in `configs/`.

```sh
repro train                    # out/model.safetensors, out/repro.lock
repro verify out/repro.lock    # rebuild in a fresh process; exit 0 = bit-identical
repro train model.hidden=64    # any key can be overridden
```

No `PYTHONPATH` and no install: `repro train` imports `{pkg}` from this folder,
and the lock records every project file the build imported (`inputs.code`), the
data, the resolved config and the toolchain that ran. Edit `{pkg}/blocks.py` and
`repro verify --inputs-only out/repro.lock` names it.

With DVC: `dvc init && dvc repro` runs the `train` stage; after you declare a
stage under `stages:` in `configs/train.yaml`, `repro dvc-yaml --write` adds it.

## Publishing

Commit the source and the lock: `{pkg}/`, `configs/`, the data (or its `.dvc`
pointers and `dvc.lock`), `dvc.yaml` and `out/repro.lock` (`.gitignore` keeps
the lock and ignores the rest of `out/`). Publish the weights beside it (`dvc
push`, or upload `out/model.safetensors`). Anyone can then run
`repro verify out/repro.lock` in a clone.
"""
