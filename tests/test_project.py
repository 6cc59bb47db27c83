"""A user's own project, as `repro init` makes it: its model imports, its code is discovered.

The project lives outside this repository; repro is found on PYTHONPATH (this
checkout) but the project never is: `repro train` puts the project root first
on the build's import path itself.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_repro, sha256_file

from repro.source.hashfile import FileDigest
from repro.source.hashing import root_digest

pytestmark = pytest.mark.slow

PKG = "proj"
SET_NET = '''\
"""A model whose layers are created in the iteration order of a set of strings."""

from torch import nn


class SetNet(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int, depth: int = 1) -> None:
        super().__init__()
        self.branches = nn.ModuleDict()
        for name in {"alpha", "beta", "gamma", "delta", "epsilon"}:  # order follows Python's hash seed
            self.branches[name] = nn.Linear(in_features, hidden)
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x):
        return self.head(sum(b(x) for b in self.branches.values()).relu())
'''


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env  # run_repro adds this checkout (repro itself) and nothing else


def _train(root: Path, out: str, *extra: str) -> Path:
    r = run_repro(["train", "--quiet", "trainer.max_steps=30", f"out_dir={out}", *extra], cwd=root, env=_env())
    assert r.code == 0, r.stderr
    return root / out


def _verify(root: Path, lock: Path, *args: str) -> tuple[int, dict]:
    r = run_repro(["verify", "--quiet", "--json", str(lock), *args], cwd=root, env=_env())
    assert r.stdout.strip(), r.stderr
    return r.code, json.loads(r.stdout)["result"]  # the report, inside the --json envelope


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`repro init proj`, trained once into out/."""
    parent = tmp_path_factory.mktemp("user")
    r = run_repro(["init", PKG], cwd=parent, env=_env())
    assert r.code == 0, r.stderr
    root = parent / PKG
    assert (root / PKG / "net.py").is_file() and (root / ".git").is_dir()
    _train(root, "out")
    return root


@pytest.fixture
def copy(scaffolded: Path, tmp_path: Path) -> Path:
    dest = tmp_path / PKG
    shutil.copytree(scaffolded, dest, symlinks=True)
    return dest


def test_scaffold_trains_twice_to_the_same_bits_and_verifies(scaffolded: Path, tmp_path: Path) -> None:
    again = _train(scaffolded, "again")
    out = scaffolded / "out"
    assert sha256_file(out / "model.safetensors") == sha256_file(again / "model.safetensors")
    assert (out / "repro.lock").read_bytes() == (again / "repro.lock").read_bytes()
    lock = json.loads((out / "repro.lock").read_text())
    # Discovered, not listed: the config has no code.include at all. The project's config files that
    # were composed are source too; repro's own groups (task, trainer, build) are its compiler's.
    assert [f["path"] for f in lock["inputs"]["code"]["files"]] == [
        "configs/data/local.yaml", "configs/model/net.yaml", "configs/train.yaml",
        f"{PKG}/__init__.py", f"{PKG}/blocks.py", f"{PKG}/net.py"]
    assert "code" not in lock["inputs"]["config"]["resolved"]
    code, report = _verify(scaffolded, out / "repro.lock")
    assert code == 0, report


def test_an_edited_helper_is_named_by_inputs_only(copy: Path) -> None:
    blocks = copy / PKG / "blocks.py"
    blocks.write_text(blocks.read_text().replace("x + self.fc2", "x - self.fc2"))
    code, report = _verify(copy, copy / "out" / "repro.lock", "--inputs-only")
    assert code == 1
    assert [(d["kind"], d["name"], d["change"]) for d in report["differences"]] == \
        [("code", f"{PKG}/blocks.py", "changed")]


def test_a_rebuild_that_imports_a_file_the_lock_lacks_names_it(copy: Path) -> None:
    lock_path = copy / "out" / "repro.lock"
    lock = json.loads(lock_path.read_text())
    code = lock["inputs"]["code"]
    code["files"] = [f for f in code["files"] if f["path"] != f"{PKG}/blocks.py"]
    code["root_digest"] = root_digest([FileDigest(f["path"], f["size"], f["hashes"]["sha256"]) for f in code["files"]])
    lock_path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    assert _verify(copy, lock_path, "--inputs-only")[0] == 0  # the recorded files all match
    # A rebuild imports only the files the lock hashes: the unlisted one is named, and nothing runs.
    r = run_repro(["verify", "--quiet", "--json", str(lock_path)], cwd=copy, env=_env())
    assert r.code == 2, r.stdout + r.stderr
    error = json.loads(r.stdout)["error"]
    assert f"{PKG}/blocks.py" in error and "not a project file hashed in the lock" in error, error
    # With --trust-code it runs anyway, and the report names the file the lock lacks.
    exit_code, report = _verify(copy, lock_path, "--trust-code")
    assert exit_code == 1, report
    [added] = [d for d in report["differences"] if d["kind"] == "code"]
    assert (added["name"], added["change"]) == (f"{PKG}/blocks.py", "added")
    assert "the rebuild imported this project file" in added["detail"]


def test_a_model_built_in_set_order_rebuilds_bit_for_bit(copy: Path) -> None:
    (copy / PKG / "setnet.py").write_text(SET_NET)
    target = f"model._target_={PKG}.setnet.SetNet"
    a, b = _train(copy, "set-a", target), _train(copy, "set-b", target)
    assert sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors")
    lock = json.loads((a / "repro.lock").read_text())
    assert f"{PKG}/setnet.py" in [f["path"] for f in lock["inputs"]["code"]["files"]]
    assert lock["build"]["env"]["PYTHONHASHSEED"] == "0"
    code, report = _verify(copy, a / "repro.lock")
    assert code == 0, report


def test_init_refuses_to_overwrite(scaffolded: Path) -> None:
    r = run_repro(["init", str(scaffolded)], cwd=scaffolded.parent, env=_env())
    assert r.code == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
