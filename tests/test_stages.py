"""Stages: `repro run NAME` hashes first, runs under the pins, checks what was written, records it.

A toy project per test (pure Python stages, no torch): raw text -> upper-cased
text -> a count. Real subprocesses throughout, since the stage runs in one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, Result, run_repro, sha256_file

from repro.canonical import canonical_json
from repro.errors import ConfigError, DataError, LockfileError
from repro.lock import stagerecord
from repro.pipeline.upstream import upstream_records
from repro.source.stages import stage_specs

BUILD = ("build: {profile: native, device: cpu, threads: 1, cpu_capability: default, precision: fp32,"
         " world_size: 1, deterministic: true, mkldnn: true, mkl_cbwr: null, kernels: vendor, unportable: record}")
CONFIG = f"""\
seed: 0
{BUILD}
stages:
  count:
    _target_: toy.count
    inputs: [mid/upper.txt]
    outputs: [out/count.txt]
  upper:
    _target_: toy.upper
    params: {{suffix: "!"}}
    inputs: [raw/*.txt]
    outputs: [mid/upper.txt]
  stray:
    _target_: toy.stray
    outputs: [out/stray.txt]
  lazy:
    _target_: toy.lazy
    outputs: [out/lazy.txt, out/never.txt]
  slow:
    _target_: toy.slow
    params: {{signal_dir: SIGNALS}}
    outputs: [out/slow.txt]
"""
TOY = '''\
import time
from pathlib import Path


def upper(inputs, outputs, *, suffix):
    text = "".join(p.read_text() for p in inputs)
    outputs[0].write_text(text.upper() + suffix)


def count(inputs, outputs):
    outputs[0].write_text(str(len(inputs[0].read_text())))


def stray(inputs, outputs):
    outputs[0].write_text("ok")
    Path("raw/extra.txt").write_text("not an output")


def lazy(inputs, outputs):
    outputs[0].write_text("only one")


def slow(inputs, outputs, *, signal_dir):
    Path(signal_dir, "started").write_text("")
    while not Path(signal_dir, "go").exists():
        time.sleep(0.05)
    outputs[0].write_text("done")
'''


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    root = tmp_path / "toy"
    (root / "configs").mkdir(parents=True)
    (root / "raw").mkdir()
    signals = tmp_path / "signals"
    signals.mkdir()
    (root / "configs" / "train.yaml").write_text(CONFIG.replace("SIGNALS", str(signals)))
    (root / "toy.py").write_text(TOY)
    (root / "raw" / "a.txt").write_text("hello ")
    (root / "raw" / "b.txt").write_text("world")
    return root


def repro_run(root: Path, *args: str) -> Result:
    return run_repro(["run", *args], cwd=root)


def test_a_stage_writes_its_outputs_and_a_canonical_record_hashed_before_it_ran(toy: Path) -> None:
    r = repro_run(toy, "upper")
    assert r.code == 0, r.stderr
    assert (toy / "mid" / "upper.txt").read_text() == "HELLO WORLD!"
    raw = (toy / "mid" / "upper.stage.json").read_bytes()
    record = json.loads(raw)
    assert canonical_json(record) == raw
    stagerecord.validate(record, "record")
    assert [f["path"] for f in record["inputs"]["files"]] == ["raw/a.txt", "raw/b.txt"]
    assert record["inputs"]["files"][0]["hashes"]["sha256"] == sha256_file(toy / "raw" / "a.txt")
    assert [f["path"] for f in record["code"]["files"]] == ["toy.py"]
    assert record["outputs"]["files"][0]["hashes"]["sha256"] == sha256_file(toy / "mid" / "upper.txt")
    assert record["declared"]["params"] == {"suffix": "!"} and record["pins"]["threads"] == 1
    assert str(toy) not in raw.decode(), "no absolute paths in a record"
    again = repro_run(toy, "upper")
    assert again.code == 0 and "nothing changed" in again.stdout
    assert (toy / "mid" / "upper.stage.json").read_bytes() == raw


def test_an_override_reaches_the_stage_and_the_rerun_names_it(toy: Path) -> None:
    assert repro_run(toy, "upper").code == 0
    r = repro_run(toy, "upper", "stages.upper.params.suffix=?")
    assert r.code == 0, r.stderr
    assert (toy / "mid" / "upper.txt").read_text() == "HELLO WORLD?"
    assert "upper.declared.params.suffix" in r.stdout and "mid/upper.txt" in r.stdout


def test_a_declared_output_not_written_is_an_error_naming_it(toy: Path) -> None:
    r = repro_run(toy, "lazy")
    assert r.code == 2
    assert "out/never.txt" in r.stderr and "did not write" in r.stderr and "Traceback" not in r.stderr
    assert not (toy / "out").exists(), "nothing moved into place, no record"


def test_a_write_outside_the_declared_outputs_is_an_error_naming_it(toy: Path) -> None:
    r = repro_run(toy, "stray")
    assert r.code == 2
    assert "raw/extra.txt" in r.stderr and "not one of its outputs" in r.stderr
    assert not (toy / "out" / "stray.txt").exists()


def test_an_unknown_stage_is_named(toy: Path) -> None:
    r = repro_run(toy, "nope")
    assert r.code == 2 and "stages.nope" in r.stderr and "upper" in r.stderr


def test_code_edited_while_the_stage_runs_is_recorded_as_it_started_and_the_rerun_notices(toy: Path) -> None:
    signals = toy.parent / "signals"
    before = sha256_file(toy / "toy.py")
    env_cmd = [sys.executable, "-m", "repro", "run", "slow", "--quiet"]
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(env_cmd, cwd=toy, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (signals / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    (toy / "toy.py").write_text(TOY.replace('write_text("done")', 'write_text("edited")'))
    (signals / "go").write_text("")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    record = json.loads((toy / "out" / "slow.stage.json").read_text())
    assert record["code"]["files"] == [{"path": "toy.py", "size": len(TOY), "hashes": {"sha256": before}}]
    assert (toy / "out" / "slow.txt").read_text() == "done", "the code that ran is the code recorded"
    rerun = repro_run(toy, "slow")
    assert rerun.code == 0, rerun.stderr
    assert "stage code" in rerun.stdout and "toy.py" in rerun.stdout
    assert (toy / "out" / "slow.txt").read_text() == "edited"


def test_stages_run_in_dependency_order_and_a_cycle_is_named() -> None:
    build = {"profile": "default"}
    cfg = {"build": build, "stages": {
        "b": {"_target_": "m.b", "inputs": ["mid/x"], "outputs": ["out/y"]},
        "a": {"_target_": "m.a", "inputs": ["raw"], "outputs": ["mid/x"]}}}
    assert list(stage_specs(cfg)) == ["a", "b"]
    cfg["stages"]["a"]["inputs"] = ["out/*"]
    with pytest.raises(ConfigError, match="cycle"):
        stage_specs(cfg)
    with pytest.raises(ConfigError, match=r"stages\.a\.oops"):
        stage_specs({"stages": {"a": {"_target_": "m.a", "outputs": ["x"], "oops": 1}}})
    with pytest.raises(ConfigError, match="also written by"):
        stage_specs({"stages": {"a": {"_target_": "m.a", "outputs": ["x"]},
                                "b": {"_target_": "m.b", "outputs": ["x"]}}})


def test_the_chain_behind_a_file_is_every_upstream_record_in_order_and_must_be_current(toy: Path) -> None:
    assert repro_run(toy, "upper").code == 0
    assert repro_run(toy, "count").code == 0
    import yaml

    resolved = yaml.safe_load((toy / "configs" / "train.yaml").read_text())
    chain = upstream_records(resolved, toy, {"out/count.txt": sha256_file(toy / "out" / "count.txt"),
                                             "raw/a.txt": sha256_file(toy / "raw" / "a.txt")})
    assert [r["stage"] for r in chain] == ["upper", "count"]
    (toy / "out" / "count.txt").write_text("999")
    with pytest.raises(DataError, match=r"out/count\.txt: stage count made it.*repro run count"):
        upstream_records(resolved, toy, {"out/count.txt": sha256_file(toy / "out" / "count.txt")})
    (toy / "mid" / "upper.stage.json").unlink()
    with pytest.raises(DataError, match=r"no record at mid/upper\.stage\.json"):
        upstream_records(resolved, toy, {"mid/upper.txt": sha256_file(toy / "mid" / "upper.txt")})


def test_dvc_yaml_check_names_a_disagreement_and_write_fixes_it(toy: Path) -> None:
    data = "data: {builder: csv, test_fraction: 0.0, split_seed: 0, data_files: [out/count.txt]}"
    (toy / "configs" / "train.yaml").write_text(CONFIG.split("  stray:")[0] + data +
                                                "\nout_dir: model\ncode: {include: []}\n")
    (toy / "dvc.yaml").write_text("# my pipeline\nstages:\n  upper:\n    cmd: python toy.py\n")
    r = run_repro(["dvc-yaml", "--check"], cwd=toy)
    assert r.code == 1
    assert "stages.upper.cmd is 'python toy.py', expected 'repro run upper'" in r.stdout
    assert "stage count is missing" in r.stdout and "stage train is missing" in r.stdout
    assert run_repro(["dvc-yaml", "--write"], cwd=toy).code == 0
    assert (toy / "dvc.yaml").read_text().startswith("# my pipeline\n")
    r = run_repro(["dvc-yaml", "--check"], cwd=toy)
    assert r.code == 0, r.stdout
    import yaml

    stages = yaml.safe_load((toy / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["upper", "count", "train"]
    # The config file that declares each stage is its dep (not the whole configs/ folder).
    assert stages["upper"]["deps"] == ["raw/a.txt", "raw/b.txt", "toy.py", "configs/train.yaml"]
    assert stages["upper"]["outs"] == ["mid/upper.txt", "mid/upper.stage.json"]
    assert stages["train"]["deps"] == ["out/count.txt", "out/count.stage.json", "configs/train.yaml"]
    assert {"model/repro.lock": {"cache": False}} in stages["train"]["outs"]


# A stage that is not deterministic, caught by verify --from-source ---------------------------

STAMP = '''\
import shutil
import time


def prepare(inputs, outputs, *, stamp):
    shutil.copyfile(inputs[0], outputs[0])
    outputs[1].write_text(str(time.time_ns()) if stamp else "no clock")
'''
STAMP_STAGE = """
data:
  data_files: [data/train.csv]
stages:
  prepare:
    _target_: stamp.prepare
    params: {stamp: true}
    inputs: [repro/examples/digits/digits.csv]
    outputs: [data/train.csv, data/stamp.txt]
"""


@pytest.mark.slow
@pytest.mark.integration
def test_verify_from_source_names_a_stage_that_writes_the_wall_clock(tmp_path: Path) -> None:
    from conftest import TINY, make_project

    root = make_project(tmp_path / "project")
    with (root / "configs" / "train.yaml").open("a") as fh:
        fh.write(STAMP_STAGE)
    (root / "stamp.py").write_text(STAMP)
    assert repro_run(root, "prepare").code == 0
    r = run_repro(["train", "--quiet", *TINY], cwd=root)
    assert r.code == 0, r.stderr
    lock = json.loads((root / "out" / "digits" / "repro.lock").read_text())
    assert [s["stage"] for s in lock["inputs"]["stages"]] == ["prepare"]
    assert run_repro(["verify", "--inputs-only", "--root", ".", "out/digits/repro.lock"], cwd=root).code == 0
    r = run_repro(["verify", "--from-source", "--quiet", "--root", ".", "out/digits/repro.lock"], cwd=root)
    assert r.code == 1, r.stdout + r.stderr
    assert "stage      prepare: rerun from source" in r.stdout and "first at data/stamp.txt" in r.stdout
    assert "stage prepare is the first that differs, at data/stamp.txt" in r.stdout
    assert "not deterministic" in r.stdout and "data/train.csv" not in r.stdout.split("MISMATCH")[1]


# The record format: golden bytes ------------------------------------------------------------

GOLDEN = Path(__file__).parent / "fixtures" / "stagerecord" / "golden-v1.json"


def _golden_record() -> dict:
    from repro.source.stages import StageSpec

    spec = StageSpec.from_config("upper", {"_target_": "toy.upper", "params": {"suffix": "!"},
                                           "inputs": ["raw/*.txt"], "outputs": ["mid/upper.txt"]})
    file = {"path": "raw/a.txt", "size": 6, "hashes": {"sha256": "ab" * 32}}
    block = {"files": [file], "root_digest": "cd" * 32}
    tool = {"python": {"implementation": "CPython", "version": "3.11.7"},
            "platform": {"system": "Linux", "machine": "x86_64", "libc": "glibc 2.36"},
            "distributions": {}, "torch": None,
            "repro": {"version": "0.2.0", "files": [{**file, "path": "repro/build/stage_child.py"}],
                      "root_digest": "ef" * 32}}
    pins = {"threads": 1, "cpu_capability": "default", "seed": 0, "mkl_cbwr": None}
    return stagerecord.assemble(spec, pins, block, {**block, "files": [{**file, "path": "toy.py"}]}, tool,
                                {**block, "files": [{**file, "path": "mid/upper.txt"}]})


def test_a_record_is_written_as_the_golden_bytes_and_an_edited_one_is_refused() -> None:
    record = _golden_record()
    assert canonical_json(record) == GOLDEN.read_bytes()
    stagerecord.validate(json.loads(GOLDEN.read_bytes()), "golden")
    edited = json.loads(GOLDEN.read_bytes())
    edited["declared"]["params"]["suffix"] = "?"
    with pytest.raises(LockfileError, match="config_sha256' does not match.*edited after the stage ran"):
        stagerecord.validate(edited, "edited")
    escaping = json.loads(GOLDEN.read_bytes())
    escaping["outputs"]["files"][0]["path"] = "../../etc/passwd"
    with pytest.raises(LockfileError, match=r"outputs\.files\.0\.path"):
        stagerecord.validate(escaping, "escaping")
