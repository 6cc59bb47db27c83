"""Each local `datasets` loader: the lock lists exactly the files the dataset is built from."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from repro.errors import ConfigError, DataError
from repro.source import preprocess
from repro.source.data import DataSpec, data_file_list, load_splits
from repro.source.inputs import data_block

ROWS = [{"x": float(i), "label": i % 3} for i in range(12)]
_opened: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        if isinstance(args[2], int) and args[2] & os.O_DIRECTORY:  # listing a folder reads no data
            return
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one is inert outside `_opens`


@pytest.fixture
def opens() -> Iterator[list[str]]:
    """Paths opened through Python (builtins.open, os.open) while the fixture is active."""
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def _csv(root: Path) -> list[str]:
    for part in (0, 1):
        rows = ROWS[part * 6 : part * 6 + 6]
        (root / "data" / "csv").mkdir(parents=True, exist_ok=True)
        (root / "data" / "csv" / f"part-{part}.csv").write_text(
            "x,label\n" + "".join(f"{r['x']},{r['label']}\n" for r in rows))
    return ["data/csv"]


def _json(root: Path) -> list[str]:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "rows.json").write_text(json.dumps(ROWS[:6]))
    (root / "data" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[6:]))
    return ["data/rows.json", "data/rows.jsonl"]


def _parquet(root: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(ROWS), root / "data" / "rows.parquet")
    return ["data/*.parquet"]


def _text(root: Path) -> list[str]:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "lines.txt").write_text("".join(f"{r['x']} {r['label']}\n" for r in ROWS))
    return ["data/lines.txt"]


def _imagefolder(root: Path) -> list[str]:
    import numpy as np
    from PIL import Image

    for i, r in enumerate(ROWS):
        folder = root / "data" / "img" / f"class {r['label']}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), i, dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return ["data/img"]


def _from_disk(root: Path) -> list[str]:
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(root / "data" / "saved"))
    return ["data/saved"]


def _rows(builder: str, ds: Any) -> list[tuple[float, int]]:
    """The loaded rows, back in ROWS' terms, to prove the data came from the written files."""
    if builder == "text":
        return sorted((float(a), int(b)) for a, b in (line.split() for line in ds["text"]))
    if builder == "imagefolder":
        labels = ds.features["label"].names
        return sorted((float(img.getpixel((0, 0))), int(labels[lab].split()[1]))
                      for img, lab in zip(ds["image"], ds["label"], strict=True))
    return sorted((float(x), int(y)) for x, y in zip(ds["x"], ds["label"], strict=True))


MAKERS: dict[str, Callable[[Path], list[str]]] = {
    "csv": _csv, "json": _json, "parquet": _parquet, "text": _text, "imagefolder": _imagefolder,
    "load_from_disk": _from_disk,
}


def _spec(builder: str, files: list[str], **extra: Any) -> DataSpec:
    node = {"builder": builder, "data_files": files, "test_fraction": 0.0, "split_seed": 0, **extra}
    return DataSpec.from_config({"data": node})


@pytest.mark.parametrize("builder", list(MAKERS))
def test_every_file_the_dataset_is_built_from_is_in_the_lock(tmp_path: Path, builder: str,
                                                             opens: list[str]) -> None:
    root = tmp_path / "proj"
    patterns = MAKERS[builder](root)
    written = sorted(p.relative_to(root).as_posix() for p in (root / "data").rglob("*") if p.is_file())
    spec = _spec(builder, patterns)
    files = data_file_list(root, spec)
    block = data_block(root, spec, files)
    locked = [f["path"] for f in block["files"]]
    assert locked == written  # every file written is in the lock, nothing else is
    assert {f["path"]: f["hashes"]["sha256"] for f in block["files"]} == {
        w: hashlib.sha256((root / w).read_bytes()).hexdigest() for w in written}

    opens.clear()
    train, test, fingerprint = load_splits(root, spec, files)
    assert _rows(builder, train) == sorted((r["x"], r["label"]) for r in ROWS)  # rows came from those files
    assert len(test) == 0 and isinstance(fingerprint, str)
    read = {os.path.relpath(p, root) for p in opens if os.path.realpath(p).startswith(str(root / "data"))}
    assert read <= set(locked), read - set(locked)  # nothing outside the lock was opened


def test_a_same_size_edit_with_the_mtime_restored_is_not_served_stale(tmp_path: Path) -> None:
    """`datasets` keys its cache of local files on mtime; repro names the cache by content."""
    root = tmp_path / "proj"
    spec = _spec("csv", _csv(root))
    files = data_file_list(root, spec)
    before, _, _ = load_splits(root, spec, files)
    target = root / "data" / "csv" / "part-0.csv"
    st = target.stat()
    target.write_text(target.read_text().replace("0.0,0", "9.0,0", 1))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    after, _, _ = load_splits(root, spec, files)
    assert 0.0 in before["x"] and 0.0 not in after["x"] and 9.0 in after["x"]


def test_extra_hashes_reach_the_data_block(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    spec = _spec("text", _text(root), extra_hashes=["blake2b"])
    (entry,) = data_block(root, spec, data_file_list(root, spec))["files"]
    assert entry["hashes"]["blake2b"] == hashlib.blake2b((root / "data" / "lines.txt").read_bytes()).hexdigest()


@pytest.mark.parametrize(("node", "error", "needle"), [
    ({"builder": "mnist"}, ConfigError, "dvc pull"),
    ({"builder": "username/some-dataset"}, ConfigError, "not a local builder"),
    ({"data_files": ["hf://datasets/user/ds/train.csv"]}, ConfigError, "is a URL"),
    ({"data_files": ["user/some-dataset"]}, DataError, "dvc pull"),
    ({"builder": "load_from_disk", "data_files": ["a", "b"]}, ConfigError, "takes one folder"),
    ({"builder": "load_from_disk", "data_files": ["data/x.csv"]}, DataError, "not a folder written by save_to_disk"),
    ({"preprocess": {"fn": "x"}}, ConfigError, "data.preprocess: expected a mapping with _target_"),
    ({"extra_hashes": ["crc32"]}, ConfigError, "data.extra_hashes"),
])
def test_non_local_data_and_bad_keys_are_clear_errors(tmp_path: Path, node: dict[str, Any], error: type,
                                                       needle: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("x\n1\n")
    cfg = {"builder": "csv", "data_files": ["data/x.csv"], "test_fraction": 0.0, "split_seed": 0, **node}
    with pytest.raises(error, match=needle):
        data_file_list(tmp_path, DataSpec.from_config({"data": cfg}))


# --- the preprocessing step -------------------------------------------------------------------------------------


@pytest.fixture
def prep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A project with its own preprocessing module, under a name no other test imports."""
    root = tmp_path / "proj"
    root.mkdir()
    name = f"prep_{abs(hash(str(tmp_path))) % 10**8}"
    (root / f"{name}.py").write_text(
        "def shift(ds, by):\n    return ds.map(lambda r: {'x': r['x'] + by})\n\n"
        "def not_a_dataset(ds):\n    return list(ds)\n\n"
        "def broken(ds):\n    raise ValueError('bad row 3\\nmore detail')\n"
    )
    monkeypatch.delitem(sys.modules, name, raising=False)
    return root, name


def test_preprocess_code_and_params_reach_the_lock_and_the_data(prep: tuple[Path, str]) -> None:
    root, name = prep
    spec = _spec("csv", _csv(root), preprocess={"_target_": f"{name}.shift", "by": 100})
    block = data_block(root, spec, data_file_list(root, spec))
    code = (root / f"{name}.py").read_bytes()
    assert block["preprocess"] == {"target": f"{name}.shift", "file": {
        "path": f"{name}.py", "size": len(code), "hashes": {"sha256": hashlib.sha256(code).hexdigest()}}}
    assert f"{name}.py" not in [f["path"] for f in block["files"]]  # code, not data
    train, _, _ = load_splits(root, spec, data_file_list(root, spec))
    assert sorted(train["x"]) == [r["x"] + 100 for r in ROWS]


def test_preprocess_from_an_installed_package_records_its_version(tmp_path: Path) -> None:
    from importlib import metadata

    rec = preprocess.record({"_target_": "datasets.concatenate_datasets"}, tmp_path)
    assert rec == {"target": "datasets.concatenate_datasets",
                   "package": {"name": "datasets", "version": metadata.version("datasets")}}


@pytest.mark.parametrize(("fn", "error", "needle"), [
    ("not_a_dataset", DataError, "returned list; expected a datasets.Dataset"),
    ("broken", DataError, r"broken: ValueError: bad row 3$"),
    ("missing", ConfigError, "has no function 'missing'"),
])
def test_preprocess_failures_name_the_step(prep: tuple[Path, str], fn: str, error: type, needle: str) -> None:
    root, name = prep
    spec = _spec("csv", _csv(root), preprocess={"_target_": f"{name}.{fn}"})
    with pytest.raises(error, match=needle):
        load_splits(root, spec, data_file_list(root, spec))


def test_preprocess_module_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'nowhere_at_all.fn': its module is neither under the project root"):
        preprocess.record({"_target_": "nowhere_at_all.fn"}, tmp_path)


@pytest.mark.parametrize(("override", "needle"), [
    ("data.builder=mnist", "data must be local files under the project (copy it in, or `dvc pull` it first)"),
    ("data.data_files=[someone/their-dataset]", "`dvc pull` it first"),
])
def test_repro_train_refuses_hub_data_with_exit_2(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str], override: str,
                                                  needle: str) -> None:
    from repro.cli import main

    monkeypatch.chdir(project)
    assert main(["train", "--quiet", override]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (project / "out").exists()
