"""Load training data through HF `datasets`, from local files only.

The lock hashes the bytes of the files a dataset is built from (see
`repro.inputs`); the `datasets` fingerprint is a cache key over pickled
transforms, not a content hash, so it is recorded as information only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.config import require
from repro.errors import ConfigError, DataError
from repro.hashing import expand_patterns

LOCAL_BUILDERS = ("csv", "json", "parquet", "text")


@dataclass(frozen=True)
class DataSpec:
    """The `data` config group, checked."""

    builder: str
    data_files: tuple[str, ...]
    test_fraction: float
    split_seed: int
    # Files the build reads or derives from without loading them as rows (a raw
    # corpus, a tokenizer): hashed into the lock with data_files. Optional key.
    sources: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> DataSpec:
        builder = require(cfg, "data.builder", str)
        if builder not in LOCAL_BUILDERS:
            raise ConfigError(
                f"config key data.builder: {builder!r} is not a local builder {list(LOCAL_BUILDERS)}; "
                "data must be local files (pull it with DVC first)"
            )
        files = require(cfg, "data.data_files", list)
        if not files or not all(isinstance(f, str) for f in files):
            raise ConfigError("config key data.data_files: expected a non-empty list of paths")
        frac = require(cfg, "data.test_fraction", float)
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"config key data.test_fraction: expected 0 <= x < 1, got {frac}")
        sources = require(cfg, "data.sources", list) if "sources" in cfg["data"] else []
        if not all(isinstance(f, str) for f in sources):
            raise ConfigError("config key data.sources: expected a list of paths or globs")
        return cls(builder, tuple(files), frac, require(cfg, "data.split_seed", int), tuple(sources))


def data_file_list(root: Path, spec: DataSpec) -> list[str]:
    """The sorted relative paths the dataset is built from (what `datasets` loads)."""
    return expand_patterns(root, spec.data_files)


def hashed_file_list(root: Path, spec: DataSpec) -> list[str]:
    """Every data file that goes into the lock: data_files plus sources, sorted."""
    extra = expand_patterns(root, spec.sources) if spec.sources else []
    return sorted(set(data_file_list(root, spec)) | set(extra), key=lambda p: p.encode("utf-8"))


def load_splits(root: Path, spec: DataSpec, files: list[str]) -> tuple[Any, Any, str]:
    """Build the dataset from `files` and split it; return (train, test, fingerprint)."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    datasets.disable_progress_bars()
    paths = [str(root / f) for f in files]
    try:
        ds = datasets.load_dataset(spec.builder, data_files=paths, split="train")
    except FileNotFoundError as exc:
        raise DataError(f"data.data_files: {exc}") from None
    if spec.test_fraction == 0.0:
        return ds, ds.select([]), ds._fingerprint
    parts = ds.train_test_split(test_size=spec.test_fraction, seed=spec.split_seed, shuffle=True)
    return parts["train"], parts["test"], ds._fingerprint
