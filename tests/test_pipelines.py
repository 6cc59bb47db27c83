"""The DVC projects' files agree with each other, and their stage scripts behave.

Fast, in-process checks of what tests/test_dvc.py relies on: params.yaml is what
DVC's Hydra composition writes, dvc.yaml tracks every key repro hashes, and the
generator and prepare scripts give the same bytes every time.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from conftest import DIGITS, REPO

EXAMPLE = REPO / "examples" / "dvc-sensors"
# (project folder, Hydra config_name DVC composes params.yaml from)
PROJECTS = [pytest.param(REPO, "pipeline", id="root"), pytest.param(EXAMPLE, "train", id="dvc-sensors")]


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_script_{path.parent.parent.name}_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stages(project: Path) -> dict:
    return yaml.safe_load((project / "dvc.yaml").read_text())["stages"]


def test_root_dvc_config_composes_from_configs_pipeline() -> None:
    from configobj import ConfigObj

    cfg = ConfigObj(str(REPO / ".dvc" / "config"))
    assert cfg["core"]["analytics"] == "false" and cfg["core"]["check_update"] == "false"
    assert dict(cfg["hydra"]) == {"enabled": "true", "config_dir": "configs", "config_name": "pipeline"}


@pytest.mark.parametrize(("project", "config_name"), PROJECTS)
def test_params_yaml_is_exactly_what_dvc_composes(project: Path, config_name: str, tmp_path: Path) -> None:
    """Else the first `dvc exp run` rewrites params.yaml and `dvc repro` trained something stale."""
    from dvc.utils.hydra import compose_and_dump

    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(project / "configs"), None, config_name, str(tmp_path), [])
    assert out.read_bytes() == (project / "params.yaml").read_bytes(), (
        f"{project / 'params.yaml'} is stale: regenerate it from configs/ (see docs/dvc.md)")


@pytest.mark.parametrize(("project", "config_name"), PROJECTS)
def test_train_stage_tracks_every_hashed_key_and_writes_under_out_dir(project: Path, config_name: str) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    train, prepare = stages(project)["train"], stages(project)["prepare"]
    # repro hashes every key but out_dir into repro.lock: DVC must rerun on any of them.
    assert sorted(train["params"]) == sorted(set(params) - {"out_dir"})
    assert prepare["params"] == ["stages.prepare"] and prepare["cmd"].startswith("repro run prepare ")
    assert train["cmd"] == "repro train --quiet --config-dir . --config-name params --root ."
    out_dir = params["out_dir"]
    outs = {(o if isinstance(o, str) else next(iter(o))): o for o in train["outs"]}
    assert set(outs) == {f"{out_dir}/model.safetensors", f"{out_dir}/metrics.jsonl", f"{out_dir}/repro.lock"}
    assert outs[f"{out_dir}/repro.lock"] == {f"{out_dir}/repro.lock": {"cache": False}}, "repro.lock goes to git"
    # The training set is prepare's out and train's dep.
    assert params["data"]["data_files"] == prepare["outs"][:-1]
    assert set(params["data"]["data_files"]) <= set(train["deps"])


def test_example_pins_every_bit_deciding_setting_as_a_value() -> None:
    build = yaml.safe_load((EXAMPLE / "params.yaml").read_text())["build"]
    assert isinstance(build["threads"], int) and build["cpu_capability"] != "native"
    assert "auto" not in json.dumps(build)


def test_generator_writes_the_same_bytes_every_time(tmp_path: Path) -> None:
    gen = load_script(EXAMPLE / "generate.py")
    for name in ("a", "b"):
        assert gen.main(["--out", str(tmp_path / name)]) == 0
    a, b = sorted((tmp_path / "a").iterdir()), sorted((tmp_path / "b").iterdir())
    assert [p.name for p in a] == [f"readings-{i:02d}.jsonl" for i in range(4)]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    records = [json.loads(line) for p in a for line in p.read_text().splitlines()]
    assert len(records) == 800 and {r["status"] for r in records} == set(gen.MEANS)
    assert any(v is None for r in records for v in r.values()), "prepare needs missing values to drop"
    other = tmp_path / "seed1"
    gen.main(["--out", str(other), "--seed", "1"])
    assert (other / a[0].name).read_bytes() != a[0].read_bytes()


@pytest.fixture
def sensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Freshly generated raw data, as the current directory (stages run in the project root)."""
    load_script(EXAMPLE / "generate.py").main(["--out", str(tmp_path / "data" / "raw")])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sensors_settings() -> dict:
    return yaml.safe_load((EXAMPLE / "params.yaml").read_text())["stages"]["prepare"]["params"]


def shards(root: Path) -> list[Path]:
    return sorted((root / "data" / "raw").glob("*.jsonl"))


def test_stage_declarations_call_the_prepare_functions_with_the_prepare_settings() -> None:
    for project in (REPO, EXAMPLE):
        params = yaml.safe_load((project / "params.yaml").read_text())
        stage = params["stages"]["prepare"]
        assert stage["_target_"] == "pipelines.prepare.prepare"
        assert stage["outputs"] == params["data"]["data_files"]
        assert stage["params"].items() <= params["prepare"].items()


def test_sensors_prepare_drops_incomplete_readings_and_numbers_classes(sensors: Path) -> None:
    prepare = load_script(EXAMPLE / "pipelines" / "prepare.py")
    out = sensors / "out" / "train.csv"
    out.parent.mkdir()
    prepare.prepare(shards(sensors), [out], **sensors_settings())
    raw = [json.loads(line) for p in shards(sensors) for line in p.open()]
    complete = [r for r in raw if None not in r.values()]
    lines = out.read_text().splitlines()
    assert lines[0] == "flow,pressure,temperature,vibration,label"
    assert len(lines) - 1 == len(complete) < len(raw)
    classes = ["ok", "worn", "failing"]
    first = complete[0]
    assert lines[1] == ",".join([*(repr(first[k]) for k in ("flow", "pressure", "temperature", "vibration")),
                                 str(classes.index(first["status"]))])
    again = sensors / "again.csv"
    prepare.prepare(shards(sensors), [again], **sensors_settings())
    assert again.read_bytes() == out.read_bytes()


def test_sensors_prepare_names_the_line_that_breaks_the_contract(sensors: Path) -> None:
    from repro.errors import DataError

    prepare = load_script(EXAMPLE / "pipelines" / "prepare.py")
    shard = sensors / "data" / "raw" / "readings-01.jsonl"
    lines = shard.read_text().splitlines()
    lines[2] = lines[2].replace('"status":"', '"status":"exploded-')
    shard.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        prepare.prepare(shards(sensors), [sensors / "train.csv"], **sensors_settings())
    assert str(err.value).startswith("data/raw/readings-01.jsonl:3:") and "prepare.classes" in str(err.value)
    assert not (sensors / "train.csv").exists()


@pytest.fixture
def digits_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_digits_prepare_keeps_all_rows_byte_for_byte_by_default(digits_project: Path) -> None:
    prepare = load_script(REPO / "pipelines" / "prepare.py")
    classes = yaml.safe_load((REPO / "params.yaml").read_text())["stages"]["prepare"]["params"]["classes"]
    prepare.prepare([DIGITS], [digits_project / "train.csv"], classes=classes)
    assert (digits_project / "train.csv").read_bytes() == DIGITS.read_bytes()


def test_digits_prepare_keeps_only_the_listed_classes(digits_project: Path) -> None:
    prepare = load_script(REPO / "pipelines" / "prepare.py")
    prepare.prepare([DIGITS], [digits_project / "train.csv"], classes=[3, 8])
    raw = DIGITS.read_text().splitlines()[1:]
    out = (digits_project / "train.csv").read_text().splitlines()[1:]
    assert out == [r for r in raw if r.rsplit(",", 1)[1] in ("3", "8")]


def test_digits_prepare_names_a_broken_row(digits_project: Path) -> None:
    from repro.errors import DataError

    lines = DIGITS.read_text().splitlines()
    lines[5] = lines[5].replace("0,", "x,", 1)
    bad = digits_project / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    prepare = load_script(REPO / "pipelines" / "prepare.py")
    with pytest.raises(DataError, match=r"^bad\.csv:6: expected integers"):
        prepare.prepare([bad], [digits_project / "train.csv"], classes=list(range(10)))
    assert not (digits_project / "train.csv").exists()


@pytest.mark.parametrize(("project", "flags"), [
    pytest.param(REPO, ["--config-dir", ".", "--config-name", "params", "--root", "."], id="root"),
    pytest.param(EXAMPLE, ["--config-dir", ".", "--config-name", "params", "--root", "."], id="dvc-sensors"),
    pytest.param(REPO / "examples" / "tiny-lm", [], id="tiny-lm"),
])
def test_each_dvc_yaml_agrees_with_its_stage_declarations(project: Path, flags: list[str]) -> None:
    from conftest import run_repro

    r = run_repro(["dvc-yaml", "--check", *flags], cwd=project)
    assert r.code == 0, r.stdout + r.stderr
