from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from repro.errors import LockfileError
from repro.lock import lockfile

GOLDEN = Path(__file__).parent / "fixtures" / "lockfile" / "golden-v2.lock"
H = "ab" * 32


def sample_lock() -> dict[str, Any]:
    files = [{"path": "data/train.csv", "size": 3, "hashes": {"sha256": H}}]
    inputs = {
        "config": {"resolved": {"seed": 0, "trainer": {"lr": 0.01}}, "sha256": H},
        "data": {"files": files, "root_digest": H, "sample_order": {"sha256": H, "count": 128}},
        "code": {"files": [{"path": "mylib/net.py", "size": 7, "hashes": {"sha256": H}}], "root_digest": H},
    }
    build = {"profile": "default", "device": "cpu", "threads": 2, "cpu_capability": "avx2", "precision": "fp32",
             "seed": 0, "world_size": 1, "deterministic": True, "mkldnn": False, "mkl_cbwr": "COMPATIBLE",
             "kernels": "portable", "unportable": "refuse",
             "flags": {}, "env": {"OMP_DYNAMIC": "FALSE", "PYTHONHASHSEED": "0"}, "cuda": None, "cpu": None}
    toolchain = {
        "python": {"implementation": "CPython", "version": "3.11.7"},
        "platform": {"system": "Linux", "machine": "x86_64", "libc": "glibc 2.36"},
        "distributions": {"numpy": "2.4.6", "torch": "2.13.0+cpu"},
        "torch": {"version": "2.13.0+cpu", "build": "cpu", "commit": "cf30153c", "cuda": None, "cudnn": None,
                  "mkl": "2024.2 build 20240605", "onednn": "3.12.0 (80afa71049cd)"},
        "kernels": {"cxx": "gcc 12.2.0"},
        "repro": {"version": "0.2.0", "files": [{"path": "repro/build/run.py", "size": 9, "hashes": {"sha256": H}}],
                  "root_digest": H},
    }
    outputs = {
        "weights": {"path": "model.safetensors", "size": 10, "hashes": {"sha256": H},
                    "tensors": [{"name": "w", "dtype": "float32", "shape": [2, 3], "sha256": H}]},
        "final_loss": 0.125,
        "loss_trajectory": {"every": 1, "steps": 2, "losses": [0.5, 0.125], "sha256": H},
        "metrics": {"accuracy": 0.5},
    }
    return lockfile.assemble(inputs, build, outputs, toolchain)


def test_writer_matches_golden_bytes(tmp_path: Path) -> None:
    lockfile.write(tmp_path / "repro.lock", sample_lock())
    assert (tmp_path / "repro.lock").read_bytes() == GOLDEN.read_bytes()


def test_golden_reads_back() -> None:
    assert lockfile.read(GOLDEN) == sample_lock()


GOLDEN_RESUMED = Path(__file__).parent / "fixtures" / "lockfile" / "golden-v3.lock"


def _identity(blocks_sha256: str) -> dict[str, Any]:
    """The source identity (repro.lock.identity) of a run whose project helper p/blocks.py has this digest."""
    lock = sample_lock()
    code = {"files": [{"path": "p/blocks.py", "size": 40, "hashes": {"sha256": blocks_sha256}}],
            "root_digest": blocks_sha256}
    return {"config": H, "data": H, "code": code, "pins": {"seed": 0, "threads": 2}, "toolchain": lock["toolchain"]}


def resumed_lock() -> dict[str, Any]:
    """sample_lock's build, resumed at step 1 from a checkpoint of other code: the version 3 addition."""
    from repro.lock.identity import boundaries

    lock = sample_lock()
    resumes = boundaries([{"step": 1, "checkpoint": "step-00000001", "identity": _identity("cd" * 32)}],
                         _identity("ef" * 32))
    return lockfile.assemble(lock["inputs"], {**lock["build"], "resumes": resumes}, lock["outputs"],
                             lock["toolchain"])


def test_a_resume_under_other_code_makes_a_version_3_lock_with_golden_bytes(tmp_path: Path) -> None:
    """The one version 3 addition, `build.resumes`: each boundary's source as six digests, and what differs."""
    from repro.lock.identity import boundaries

    lockfile.write(tmp_path / "repro.lock", resumed_lock())
    assert (tmp_path / "repro.lock").read_bytes() == GOLDEN_RESUMED.read_bytes()
    lock = lockfile.read(GOLDEN_RESUMED)
    assert lock["version"] == 3 and lock == resumed_lock()
    assert lock["build"]["resumes"][0]["differs"] == [{"kind": "code", "name": "p/blocks.py", "change": "changed"}]
    # Resumes of the same source leave no record: the lock keeps the bytes of a run that never stopped.
    same = _identity("ef" * 32)
    assert boundaries([{"step": 1, "checkpoint": "step-00000001", "identity": same}], same) is None
    v2 = {**lock, "version": 2}
    with pytest.raises(LockfileError, match="build"):  # a version 2 reader would ignore the record: never
        lockfile.read(_write(tmp_path, v2))


def _write(tmp_path: Path, obj: Any) -> Path:
    p = tmp_path / "repro.lock"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda lk: lk.update(version=4), "newer than this repro"),
    (lambda lk: lk.update(version=3), "'resumes' is a required property"),
    (lambda lk: lk.update(version=1), "expected 2"),
    (lambda lk: lk.pop("toolchain"), "'toolchain' is a required property"),
    (lambda lk: lk["toolchain"]["repro"]["files"][0].update(path="../x.py"), "toolchain.repro.files.0.path"),
    (lambda lk: lk.update(version="1"), "field 'version'"),
    (lambda lk: lk["inputs"].pop("data"), "'data' is a required property"),
    (lambda lk: lk["build"].update(threads="two"), "build.threads"),
    (lambda lk: lk["inputs"]["data"]["files"][0].update(path="../../etc/passwd"), "inputs.data.files.0.path"),
    (lambda lk: lk["inputs"]["data"]["files"][0].update(path="/etc/passwd"), "inputs.data.files.0.path"),
])
def test_bad_locks_fail_with_the_field_named(tmp_path: Path, mutate: Any, needle: str) -> None:
    lock = copy.deepcopy(sample_lock())
    mutate(lock)
    with pytest.raises(LockfileError, match=needle.replace("(", r"\(")):
        lockfile.read(_write(tmp_path, lock))


def test_malformed_json(tmp_path: Path) -> None:
    with pytest.raises(LockfileError, match="not valid JSON"):
        lockfile.read(_write(tmp_path, "{not json"))


def test_the_lock_types_mirror_the_schema() -> None:
    """Every object in lockfile.schema.json has a TypedDict with the same required and optional keys."""
    from repro.lock import types as t

    schema = lockfile.schema()
    defs = schema["$defs"]

    def node(*path: str) -> dict[str, Any]:
        n: dict[str, Any] = schema
        for part in path:
            n = n["properties"][part] if part != "[]" else n["items"]
        return n

    pairs: list[tuple[dict[str, Any], type, set[str]]] = [
        (schema, t.Lock, set()), (node("inputs"), t.Inputs, set()), (node("inputs", "config"), t.ConfigBlock, set()),
        # sample_order: required in a lock, absent from hash_inputs' view (made before training)
        (node("inputs", "data"), t.DataBlock, {"sample_order"}),
        (node("inputs", "data", "preprocess"), t.Preprocess, set()),
        (node("inputs", "data", "preprocess", "package"), t.PreprocessPackage, set()),
        (node("inputs", "data", "sample_order"), t.SampleOrder, set()), (node("inputs", "code"), t.FilesBlock, set()),
        (node("build"), t.Build, set()), (node("build", "resumes", "[]"), t.ResumeBoundary, set()),
        (node("build", "resumes", "[]", "source"), t.ResumeSource, set()),
        (node("build", "resumes", "[]", "differs", "[]"), t.ResumeDifference, set()),
        (node("toolchain"), t.Toolchain, set()),
        (node("toolchain", "python"), t.PythonFacts, set()), (node("toolchain", "platform"), t.PlatformFacts, set()),
        (node("toolchain", "torch"), t.TorchFacts, set()), (node("toolchain", "repro"), t.Compiler, set()),
        (node("outputs"), t.Outputs, set()), (node("outputs", "weights"), t.Weights, set()),
        (node("outputs", "weights", "tensors", "[]"), t.TensorRecord, set()),
        (node("outputs", "loss_trajectory"), t.LossTrajectory, set()),
        (node("outputs", "step_digests"), t.StepDigests, set()),
        (defs["file"], t.FileRecord, set()), (defs["hashes"], t.Hashes, set()),
    ]
    from dataclasses import fields

    from repro.environment.pins import Pins

    pins = {f.name: str(f.type) for f in fields(Pins)}  # annotations as written: "str", "str | None"
    build = {k: getattr(v, "__name__", None) or str(v) for k, v in t.Build.__annotations__.items()}
    assert {k: v for k, v in build.items() if k in pins} == pins  # the same pins, with the same types
    for obj, typed, relaxed in pairs:
        required = set(obj.get("required", []))
        assert set(typed.__required_keys__) == required - relaxed, typed.__name__  # type: ignore[attr-defined]
        optional = set(obj.get("properties", {})) - required
        assert set(typed.__optional_keys__) == optional | relaxed, typed.__name__  # type: ignore[attr-defined]
