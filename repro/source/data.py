"""Load training data through HF `datasets`, from local files only.

The lock hashes the bytes of every file a dataset is built from (see
`repro.source.inputs`), and exactly those files are handed to `datasets`. Its
fingerprint is a cache key over pickled transforms, not a content hash, so it is
recorded in run.json as information only.

`datasets` keys its own Arrow cache for local files on their mtime; an edit that
keeps the size and restores the mtime would be served stale. So repro gives
each build a cache folder named by the root digest of its files: new bytes,
new folder, whatever the timestamps say.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.errors import ConfigError, DataError, LockfileError, is_write_failure, output_error
from repro.source.algorithms import check_algorithms
from repro.source.config import optional, require
from repro.source.walk import expand_patterns

LOCAL_BUILDERS = ("csv", "json", "parquet", "text", "imagefolder")
FROM_DISK = "load_from_disk"  # a folder written by `Dataset.save_to_disk`
LOCAL_ONLY = "data must be local files under the project (copy it in, or `dvc pull` it first)"


@dataclass(frozen=True)
class DataSpec:
    """The `data` config group, checked. `preprocess` and `extra_hashes` are optional keys."""

    builder: str
    data_files: tuple[str, ...]
    test_fraction: float
    split_seed: int
    preprocess: dict[str, Any] | None = None  # a `_target_` node: fn(dataset, **params) -> dataset
    extra_hashes: tuple[str, ...] = ()  # algorithms recorded beside sha256, e.g. [blake2b]
    # Files the build reads or derives from without loading them as rows (a raw
    # corpus, a tokenizer): hashed into the lock with data_files.
    sources: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> DataSpec:
        builder = require(cfg, "data.builder", str)
        if builder not in (*LOCAL_BUILDERS, FROM_DISK):
            raise ConfigError(
                f"config key data.builder: {builder!r} is not a local builder {[*LOCAL_BUILDERS, FROM_DISK]}; "
                + LOCAL_ONLY
            )
        files = require(cfg, "data.data_files", list)
        if not files or not all(isinstance(f, str) for f in files):
            raise ConfigError("config key data.data_files: expected a non-empty list of paths")
        if builder == FROM_DISK and len(files) != 1:
            raise ConfigError(f"config key data.data_files: {FROM_DISK} takes one folder, got {len(files)} entries")
        for f in files:
            if "://" in f:
                raise ConfigError(f"config key data.data_files: {f!r} is a URL; {LOCAL_ONLY}")
        frac = require(cfg, "data.test_fraction", float)
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"config key data.test_fraction: expected 0 <= x < 1, got {frac}")
        pre = optional(cfg, "data.preprocess", dict, None)
        if pre is not None and not isinstance(pre.get("_target_"), str):
            raise ConfigError("config key data.preprocess: expected a mapping with _target_ (a function's import path)")
        extra = optional(cfg, "data.extra_hashes", list, [])
        if not all(isinstance(a, str) for a in extra):
            raise ConfigError("config key data.extra_hashes: expected a list of algorithm names")
        sources = optional(cfg, "data.sources", list, [])
        if not all(isinstance(f, str) for f in sources):
            raise ConfigError("config key data.sources: expected a list of paths or globs")
        return cls(builder, tuple(files), frac, require(cfg, "data.split_seed", int), pre,
                   check_algorithms(extra)[1:], tuple(sources))


@dataclass(frozen=True)
class DataFiles:
    """The files one build reads, globbed once (`resolve_files`) and then only passed along.

    `trained`: what `datasets` loads (data.data_files expanded); `hashed`: those plus
    data.sources, sorted: the lock's `inputs.data.files`. Both come from one expansion
    of each pattern, so the list the lock records is the list trained on.
    """

    trained: tuple[str, ...]
    hashed: tuple[str, ...]


def resolve_files(root: Path, spec: DataSpec) -> DataFiles:
    """Expand data.data_files and data.sources under `root`, once each."""
    trained = data_file_list(root, spec)
    try:
        extra = expand_patterns(root, spec.sources) if spec.sources else []
    except (DataError, LockfileError) as exc:
        raise DataError(f"data.sources: {exc}") from None
    hashed = sorted(set(trained) | set(extra), key=lambda p: p.encode("utf-8"))
    return DataFiles(tuple(trained), tuple(hashed))


def data_file_list(root: Path, spec: DataSpec) -> list[str]:
    """The sorted relative paths the dataset is built from (what `datasets` loads)."""
    try:
        files = expand_patterns(root, spec.data_files)
    except DataError as exc:
        raise DataError(f"data.data_files: {exc}; {LOCAL_ONLY}") from None
    except LockfileError as exc:
        raise DataError(f"data.data_files: {exc}") from None
    if spec.builder == FROM_DISK and not (Path(root) / spec.data_files[0]).is_dir():
        raise DataError(f"data.data_files: {spec.data_files[0]} is not a folder written by save_to_disk")
    return files


def hashed_file_list(root: Path, spec: DataSpec) -> list[str]:
    """Every data file that goes into the lock: data_files plus sources, sorted."""
    return list(resolve_files(root, spec).hashed)


def load_splits(root: Path, spec: DataSpec, files: Sequence[str],
                data_digest: str | None = None) -> tuple[Any, Any, str]:
    """Build the dataset from `files`, preprocess it, split it; return (train, test, fingerprint)."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    datasets.disable_progress_bars()
    # Transforms are recomputed every run: their cache key is pickled code, not content,
    # and map() on a load_from_disk dataset would otherwise write into the data folder.
    datasets.disable_caching()
    if spec.builder == FROM_DISK:
        ds = _from_disk(root, spec.data_files[0])
    else:
        paths = [str(root / f) for f in files]
        cache = content_cache_dir(root, files, data_digest)
        try:
            ds = datasets.load_dataset(spec.builder, data_files=paths, split="train", cache_dir=str(cache))
        except FileNotFoundError as exc:
            raise DataError(f"data.data_files: {exc}") from None
        except Exception as exc:  # datasets wraps a full disk in its own errors: name the cache and the cause
            cause: BaseException | None = exc
            while cause is not None and not is_write_failure(cause):
                cause = cause.__cause__ or cause.__context__
            if isinstance(cause, OSError):
                raise output_error(cause, cache) from None
            raise
    fingerprint = ds._fingerprint
    if spec.preprocess is not None:
        from repro.source.preprocess import apply

        ds = apply(ds, spec.preprocess, root)
    if spec.test_fraction == 0.0:
        return ds, ds.select([]), fingerprint
    parts = ds.train_test_split(test_size=spec.test_fraction, seed=spec.split_seed, shuffle=True)
    return parts["train"], parts["test"], fingerprint


def content_cache_dir(root: Path, files: Sequence[str], digest: str | None = None) -> Path:
    """`datasets`' cache folder for these files, named by a digest of their content.

    `digest` is the build's data root digest (it covers these files, and maybe more);
    without one the files are hashed here, through the stat cache.
    """
    import datasets

    if digest is None:
        from repro.source.hashcache import open_cache
        from repro.source.hashing import hash_files, root_digest

        with open_cache(root) as cache:
            digest = root_digest(hash_files(root, files, cache=cache))
    return Path(datasets.config.HF_DATASETS_CACHE) / "repro" / digest


def _from_disk(root: Path, folder: str) -> Any:
    import datasets

    try:
        ds = datasets.load_from_disk(str(root / folder))
    except FileNotFoundError as exc:
        raise DataError(f"data.data_files: {folder}: not a folder written by save_to_disk ({exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"data.data_files: {folder} holds splits {sorted(ds)}; repro trains on 'train'")
        ds = ds["train"]
    return ds
