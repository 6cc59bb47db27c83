"""The checkpoint format: tree encoding, RNG capture, manifests, and the choice of checkpoint."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

from repro.canonical import canonical_json
from repro.errors import Busy, CheckpointError, CheckpointTooOld
from repro.filenames import OUT_DIR_LOCK
from repro.models import MLP
from repro.source.config import CheckpointSpec, hashed_view
from repro.source.inputs import config_digest
from repro.train import checkpoint, resume
from repro.train.sampling import OrderDigest, SampleOrder
from repro.train.state import Parts, capture, decode, encode, restore, rng_state, set_rng_state


def _trained_parts() -> Parts:
    torch.manual_seed(3)
    model = MLP(4, 8, 3, dropout=0.5)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return Parts(model, opt, sched, None)


def test_encode_keeps_what_json_would_lose() -> None:
    t = torch.arange(3, dtype=torch.int16)
    tensors: dict[str, torch.Tensor] = {}
    tree = {"state": {0: {"step": t}}, "groups": [{"betas": (0.9, 0.999), "best": float("inf"), "w": 0, "x": 0.0}],
            "$odd": None}
    assert encode(tree, "opt", tensors) == {"$items": [
        ["state", {"$items": [[0, {"step": {"$tensor": "opt.state.0.step"}}]]}],
        ["groups", [{"betas": {"$tuple": [0.9, 0.999]}, "best": {"$float": "inf"}, "w": 0, "x": 0.0}]],
        ["$odd", None],
    ]}
    assert list(tensors) == ["opt.state.0.step"] and tensors["opt.state.0.step"] is t
    back = decode(json.loads(canonical_json(encode(tree, "opt", {}))), tensors)
    assert back["groups"][0]["betas"] == (0.9, 0.999) and back["groups"][0]["best"] == float("inf")
    assert isinstance(back["groups"][0]["w"], int) and isinstance(back["groups"][0]["x"], float)
    assert back["state"][0]["step"] is t and set(back) == {"state", "groups", "$odd"}


def test_encode_refuses_objects_that_would_need_pickling() -> None:
    with pytest.raises(CheckpointError, match="sched.fn: a function"):
        encode({"fn": lambda: 0}, "sched", {})


def test_rng_state_round_trips_through_json() -> None:
    saved = json.loads(canonical_json(rng_state()))
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(saved, "test")
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


# A source identity (repro.lock.identity) as a checkpoint records it; its values matter only where compared.
IDENTITY = {"config": "0" * 64, "data": "1" * 64, "code": {"files": [], "root_digest": "2" * 64}, "pins": {},
            "toolchain": {"python": {}, "platform": {}, "distributions": {}, "torch": None,
                          "repro": {"version": "0", "files": [], "root_digest": "3" * 64}}}


def _write_one(root: Path, parts: Parts, step: int) -> Path:
    order = SampleOrder(10, 2, 0, True)
    digest = OrderDigest()
    for s in range(step):
        digest.update(order.batch(s))
    writers, state = capture(step, parts, order, [0.5] * step, digest, ["0" * 32] * (step + 1))
    state.update(inputs={"config": {"resolved": {}, "sha256": "0" * 64}, "data": {"files": [], "root_digest": "0"},
                         "code": {"files": [], "root_digest": "0", "repro": {}}},
                 build={"packages": {}}, resumes=[], identity=IDENTITY)
    writers[checkpoint.STATE_NAME] = checkpoint.bytes_writer(canonical_json(state))
    return checkpoint.write(root, step, writers)


def test_write_read_restore_is_exact(tmp_path: Path) -> None:
    parts = _trained_parts()
    path = _write_one(tmp_path, parts, 4)
    assert path.name == "step-00000004"
    assert sorted(p.name for p in path.iterdir()) == sorted([*checkpoint.REQUIRED, checkpoint.MANIFEST_NAME])
    expected = {"rng": torch.rand(4), "weights": {k: v.clone() for k, v in parts.model.state_dict().items()}}

    fresh = _trained_parts()
    fresh.model.net[0].weight.data.zero_()
    torch.manual_seed(99)
    ckpt = checkpoint.read(path)
    digest, losses = restore(ckpt, fresh, SampleOrder(10, 2, 0, True))
    assert losses == [0.5] * 4 and digest.count == 8
    assert all(torch.equal(v, expected["weights"][k]) for k, v in fresh.model.state_dict().items())
    assert fresh.scheduler.state_dict() == parts.scheduler.state_dict()
    a, b = fresh.optimizer.state_dict(), parts.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert all(torch.equal(a["state"][i][k], b["state"][i][k]) for i in b["state"] for k in b["state"][i])
    assert torch.equal(torch.rand(4), expected["rng"])  # the RNG continues where the capture left it


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:100]),
     "model.safetensors: 100 bytes, the manifest records"),
    (lambda p: (p / "optimizer.safetensors").write_bytes(b"x" + (p / "optimizer.safetensors").read_bytes()[1:]),
     "optimizer.safetensors: sha256"),
    (lambda p: (p / "MANIFEST.json").unlink(), "MANIFEST.json: missing (the write did not finish)"),
    (lambda p: (p / "MANIFEST.json").write_text(json.dumps({"version": 3, "step": 4, "files": []})),
     "version 3 is newer than this repro understands"),
    (lambda p: (p / "MANIFEST.json").write_text(json.dumps({"version": 1, "step": 4, "files": []})),
     "step-00000004/MANIFEST.json: checkpoint version 1, written by an earlier repro that did not record the "
     "source identity"),
])
def test_damaged_checkpoint_is_refused_naming_the_file(tmp_path: Path, damage, message: str) -> None:
    path = _write_one(tmp_path, _trained_parts(), 4)
    damage(path)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        checkpoint.read(path)


def test_newest_valid_skips_a_damaged_newest_and_prune_keeps_the_newest(tmp_path: Path) -> None:
    parts = _trained_parts()
    for step in (2, 4, 6):
        _write_one(tmp_path, parts, step)
    (tmp_path / "step-00000006" / "state.json").write_text("{}")
    (tmp_path / "old.pt").write_bytes(b"")
    ckpt, skipped = checkpoint.newest_valid(tmp_path)
    assert ckpt is not None and ckpt.step == 4
    assert skipped[0].startswith("old.pt: not loaded") and skipped[1].startswith("step-00000006/state.json")
    # One of an earlier format is not skipped like a damaged one (and then deleted): it is refused.
    manifest = tmp_path / "step-00000006" / "MANIFEST.json"
    manifest.write_text(manifest.read_text().replace('"version": 2', '"version": 1'))
    with pytest.raises(CheckpointTooOld, match=re.escape(f"{tmp_path}/step-00000006/MANIFEST.json: checkpoint "
                                                         "version 1")):
        checkpoint.newest_valid(tmp_path)
    checkpoint.prune(tmp_path, 2)
    assert [p.name for p in checkpoint.step_dirs(tmp_path)] == ["step-00000004", "step-00000006"]


@pytest.mark.parametrize("name", ["run.pt", "run.bin", "model.ckpt"])
def test_pickled_files_are_refused_before_reading(tmp_path: Path, name: str) -> None:
    with pytest.raises(CheckpointError, match="pickled checkpoints are never loaded"):
        checkpoint.read(tmp_path / name)  # it does not even exist: the suffix alone decides


def test_checkpoint_settings_are_not_hashed() -> None:
    cfg = {"seed": 0, "out_dir": "x", "build": {"world_size": 1},
           "trainer": {"lr": 0.1, "checkpoint_every": 10, "keep_checkpoints": 2}}
    other = {**cfg, "out_dir": "y", "trainer": {**cfg["trainer"], "checkpoint_every": 0, "keep_checkpoints": 5}}
    assert hashed_view(cfg) == {"seed": 0, "build": {"world_size": 1}, "trainer": {"lr": 0.1}}
    assert config_digest(cfg) == config_digest(other)
    assert cfg["trainer"]["checkpoint_every"] == 10  # the view is a copy
    assert CheckpointSpec.from_config(cfg) == CheckpointSpec(every=10, keep=2)
    assert CheckpointSpec.from_config(hashed_view(cfg)) == CheckpointSpec(every=0, keep=1)
    # Multi-process runs checkpoint too (rank 0 writes; see tests/test_scale.py).
    assert CheckpointSpec.from_config({**cfg, "build": {"world_size": 2}}) == CheckpointSpec(every=10, keep=2)


def test_changes_names_config_keys_files_and_packages() -> None:
    f = {"path": "d.csv", "size": 1, "hashes": {"sha256": "a" * 64}}
    base = {"inputs": {"config": {"resolved": {"trainer": {"lr": 0.01}, "seed": 0}},
                       "data": {"files": [f]}, "code": {"files": [], "repro": {"files": []}}},
            "build": {"threads": 2, "packages": {"torch": "2.13.0"}}}
    now = json.loads(json.dumps(base))
    assert resume.changes(base, now) == []
    now["inputs"]["config"]["resolved"]["trainer"]["lr"] = 0.02
    now["inputs"]["data"]["files"][0]["hashes"]["sha256"] = "b" * 64
    now["build"]["packages"]["torch"] = "2.14.0"
    assert resume.changes(base, now) == [
        "config key trainer.lr is 0.02, the checkpoint has 0.01",
        "data file d.csv is bbbbbbbbbbbb…, the checkpoint has aaaaaaaaaaaa…",
        "package torch is '2.14.0', the checkpoint has '2.13.0'",
    ]


def test_out_dir_lock_refuses_a_second_holder_and_cleans_up_after_failure(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with resume.hold_out_dir(out):
        code = ("import sys; from pathlib import Path; from repro.train.resume import hold_out_dir\n"
                "from repro.errors import Busy\n"
                "try:\n    hold_out_dir(Path(sys.argv[1])).__enter__()\nexcept Busy as e:\n    print(e)")
        other = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                               env={"PYTHONPATH": str(REPO)}, check=True)
        assert "another `repro train` is running there" in other.stdout
        with pytest.raises(Busy), resume.hold_out_dir(out):
            pass
    assert not (out / OUT_DIR_LOCK).exists()  # deleted when the build ends
    with pytest.raises(RuntimeError), resume.hold_out_dir(out):
        raise RuntimeError("training failed")
    assert out.is_dir()  # it existed before that build: left alone
    fresh = tmp_path / "c" / "d"
    with pytest.raises(RuntimeError), resume.hold_out_dir(fresh):
        raise RuntimeError("training failed")
    assert not (tmp_path / "c").exists()  # made by the failed build, removed again


def test_dropout_draws_from_the_torch_rng() -> None:
    net, x = MLP(4, 16, 2, dropout=0.5).train(), torch.ones(2, 4)
    state = torch.get_rng_state()
    a = net(x)
    assert not torch.equal(a, net(x))
    torch.set_rng_state(state)
    assert torch.equal(a, net(x))
    assert [k for k in MLP(4, 16, 2).state_dict()] == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]


def test_tied_weights_are_checkpointed_without_copying_the_rest() -> None:
    from safetensors.torch import load, save

    from repro.train.state import _serialisable

    w, b = torch.randn(3, 3), torch.randn(3)
    out = _serialisable({"enc.weight": w, "dec.weight": w, "bias": b})
    assert list(out) == ["bias", "dec.weight", "enc.weight"]
    assert out["bias"].data_ptr() == b.data_ptr()  # not copied
    assert (out["dec.weight"].data_ptr() == w.data_ptr()) != (out["enc.weight"].data_ptr() == w.data_ptr())
    back = load(save(out))
    assert torch.equal(back["enc.weight"], w) and torch.equal(back["dec.weight"], w)


def test_manifest_golden_bytes(tmp_path: Path) -> None:
    import hashlib

    blobs = {"model.safetensors": b"m", "optimizer.safetensors": b"oo", "state.json": b"{}\n"}
    path = checkpoint.write(tmp_path, 7, {k: checkpoint.bytes_writer(v) for k, v in blobs.items()})
    h = {k: hashlib.sha256(v).hexdigest() for k, v in blobs.items()}
    assert (path / "MANIFEST.json").read_text() == (
        '{\n  "files": [\n'
        f'    {{\n      "hashes": {{\n        "sha256": "{h["model.safetensors"]}"\n      }},\n'
        '      "path": "model.safetensors",\n      "size": 1\n    },\n'
        f'    {{\n      "hashes": {{\n        "sha256": "{h["optimizer.safetensors"]}"\n      }},\n'
        '      "path": "optimizer.safetensors",\n      "size": 2\n    },\n'
        f'    {{\n      "hashes": {{\n        "sha256": "{h["state.json"]}"\n      }},\n'
        '      "path": "state.json",\n      "size": 3\n    }\n'
        '  ],\n  "step": 7,\n  "version": 2\n}\n'
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000007"]  # no temp folder left


def test_out_dir_lock_retries_when_its_file_was_deleted_under_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Winning the flock on a lock file whose holder just deleted it must not count."""
    real_stat, lock_path, calls = os.stat, tmp_path / "out" / OUT_DIR_LOCK, []

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if path == lock_path:
            calls.append(path)
            if len(calls) == 1:
                raise FileNotFoundError(path)  # as if the previous holder unlinked it right then
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    with resume.hold_out_dir(tmp_path / "out"):
        assert len(calls) == 2 and lock_path.is_file()


def _swapped_in(path: Path, other: Path) -> None:
    """`path` replaced by a copy of `other`, as a racing stranger would: a new file under the old name."""
    staged = path.with_name("staged.tmp")
    staged.write_bytes(other.read_bytes())
    os.replace(staged, path)


def test_a_checkpoint_file_is_hashed_through_the_descriptor_that_was_checked(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29, item 10: the model file is swapped for another checkpoint's right after its check.

    `read` still hashes the checked file (its digest is the manifest's: no error),
    and `restore` then refuses the swapped-in file instead of loading it.
    """
    path = _write_one(tmp_path / "a", _trained_parts(), 4)
    other_parts = _trained_parts()
    other_parts.model.net[0].weight.data.add_(1)
    other = _write_one(tmp_path / "b", other_parts, 4)
    real = checkpoint.open_regular
    swapped: list[str] = []

    def check_then_swap(p: Path, *args: object, **kwargs: object) -> tuple[int, os.stat_result]:
        out = real(p, *args, **kwargs)
        if Path(p).name == checkpoint.MODEL_NAME and not swapped:
            _swapped_in(Path(p), other / checkpoint.MODEL_NAME)
            swapped.append(str(p))
        return out

    monkeypatch.setattr(checkpoint, "open_regular", check_then_swap)
    ckpt = checkpoint.read(path)  # the checked file's digest: the manifest's
    assert swapped
    monkeypatch.setattr(checkpoint, "open_regular", real)
    fresh = _trained_parts()
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"model\.safetensors: changed since its digest was checked"):
        restore(ckpt, fresh, SampleOrder(10, 2, 0, True))
    assert all(torch.equal(v, before[k]) for k, v in fresh.model.state_dict().items())  # nothing loaded


def test_a_checkpoint_file_swapped_after_read_is_never_loaded(tmp_path: Path) -> None:
    """Between `read` (digests checked) and `restore`, a file is replaced or rewritten in place: refused."""
    path = _write_one(tmp_path / "a", _trained_parts(), 4)
    other_parts = _trained_parts()
    other_parts.model.net[0].weight.data.add_(1)
    other = _write_one(tmp_path / "b", other_parts, 4)
    ckpt = checkpoint.read(path)
    # the optimizer file's bytes are the same in both (the same training): refused all the same, as another file
    _swapped_in(path / checkpoint.OPTIMIZER_NAME, other / checkpoint.OPTIMIZER_NAME)
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors: changed since its digest was checked"):
        restore(ckpt, _trained_parts(), SampleOrder(10, 2, 0, True))
    _swapped_in(path / checkpoint.MODEL_NAME, other / checkpoint.MODEL_NAME)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: changed since its digest was checked"):
        restore(ckpt, _trained_parts(), SampleOrder(10, 2, 0, True))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256"):
        checkpoint.read(path)  # read and checked again, the new file's digest is not the manifest's

    path = _write_one(tmp_path / "c", _trained_parts(), 4)
    ckpt = checkpoint.read(path)
    model = path / checkpoint.MODEL_NAME
    with open(model, "r+b") as f:  # the same inode, rewritten in place with the same bytes: its ctime moves
        f.write(model.read_bytes())
    with pytest.raises(CheckpointError, match=r"model\.safetensors: changed since its digest was checked"):
        restore(ckpt, _trained_parts(), SampleOrder(10, 2, 0, True))
