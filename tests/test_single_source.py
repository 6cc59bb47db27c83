"""One rule, one place (issue 31): each test here fails when a rule gets a second home.

The pin names come from `fields(Pins)`; a `module.function` target is imported and
judged one way; a child reports a failure one way; one function seeds; one module
names repro's files; one function names a blob's sha256.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from conftest import REPO, run_repro

from repro.environment.pins import BUILD_KEYS, PIN_KEYS, Pins
from repro.errors import ConfigError, UserInputError

PACKAGE = REPO / "repro"


def modules() -> list[tuple[str, ast.Module]]:
    return [(p.relative_to(PACKAGE).as_posix(), ast.parse(p.read_text(encoding="utf-8")))
            for p in sorted(PACKAGE.rglob("*.py"))]


PINS = Pins(profile="default", device="cpu", threads=2, cpu_capability="avx2", precision="fp32", seed=3,
            world_size=1, deterministic=True, mkldnn=False, mkl_cbwr=None, kernels="portable", unportable="refuse")


# --- the pin names ---------------------------------------------------------------------------


def test_every_list_of_pin_names_is_fields_of_pins() -> None:
    from repro.lock import lockdiff
    from repro.source.config import REQUIRED_KEYS, VALUE_TYPES
    from repro.source.schema import build_keys

    assert tuple(f.name for f in fields(Pins)) == PIN_KEYS
    assert lockdiff.PIN_KEYS is PIN_KEYS  # rebuild.py reads it there
    assert BUILD_KEYS == tuple(k for k in PIN_KEYS if k != "seed") == build_keys()
    assert [k for k in REQUIRED_KEYS if k.startswith("build.")] == [f"build.{k}" for k in BUILD_KEYS]
    assert [k for k in VALUE_TYPES if k.startswith("build.")] == [f"build.{k}" for k in BUILD_KEYS]


def test_the_config_types_of_the_build_keys_are_the_pins_types() -> None:
    from repro.source.config import check_value_types

    check_value_types({"build": {k: getattr(PINS, k) for k in BUILD_KEYS}})  # every pin's own value passes
    check_value_types({"build": {"threads": "auto"}})  # resolved to this machine's cores
    for key, wrong in (("threads", 1.5), ("device", 1), ("deterministic", "yes"), ("mkl_cbwr", 0)):
        with pytest.raises(ConfigError, match=f"config key build.{key}: expected"):
            check_value_types({"build": {key: wrong}})


def test_the_locks_pins_record_has_every_pin_with_its_type() -> None:
    from repro.lock.types import Build, PinRecord

    assert get_type_hints(PinRecord) == get_type_hints(Pins)
    assert set(PIN_KEYS) <= Build.__required_keys__


def test_a_stage_names_every_pin_once_recorded_or_fixed() -> None:
    from repro.builder.stage import STAGE_FIXED, STAGE_RECORDED, as_pins, stage_pins

    assert not set(STAGE_FIXED) & set(STAGE_RECORDED)
    assert set(STAGE_FIXED) | set(STAGE_RECORDED) == set(PIN_KEYS)
    again = as_pins(stage_pins(PINS))
    assert {k: getattr(again, k) for k in STAGE_RECORDED} == {k: getattr(PINS, k) for k in STAGE_RECORDED}
    assert (again.kernels, again.world_size, again.device) == ("vendor", 1, "cpu")


# --- one target importer, one definition rule ---------------------------------------------------


@pytest.fixture
def code_root(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "steps.py").write_text("from json import dumps as borrowed\n\ndef own(x):\n    return x\n")
    (tmp_path / "elsewhere.py").write_text("def fn(x):\n    return x\n")
    (root / "linked.py").symlink_to(tmp_path / "elsewhere.py")
    return root


@pytest.fixture
def clean_imports() -> Any:
    """Whatever the tests import from a project root is forgotten afterwards (the finder too)."""
    from repro.source.project_import import ProjectFinder

    before, meta, path = set(sys.modules), list(sys.meta_path), list(sys.path)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]
    sys.meta_path[:] = [f for f in meta if not isinstance(f, ProjectFinder)] + \
        [f for f in meta if isinstance(f, ProjectFinder)]
    sys.path[:] = path


def test_a_target_is_found_by_real_path_and_imported_as_that_file(code_root: Path, clean_imports: None) -> None:
    from repro.source.project_import import defining_file, import_target, project_file

    assert project_file("pkg.steps.own", code_root) == "pkg/steps.py"
    assert project_file("linked.fn", code_root) is None, "a module linked outside the root is not the project's"
    assert project_file("not a path", code_root) is None
    fn = import_target("pkg.steps.own", code_root, "stages.x._target_")
    assert fn(7) == 7 and defining_file(fn, code_root) == "pkg/steps.py"
    assert defining_file(fn, code_root, served={"pkg/other.py": "0" * 64}) is None, "not one of the served files"
    borrowed = import_target("pkg.steps.borrowed", code_root, "stages.x._target_")
    assert defining_file(borrowed, code_root) is None, "reached through a project module, defined in json"


def test_the_target_importer_refuses_a_module_that_resolves_outside_the_project(code_root: Path,
                                                                               clean_imports: None) -> None:
    from repro.source.project_import import import_target

    with pytest.raises(UserInputError, match="linked.py"):
        import_target("linked.fn", code_root, "data.preprocess._target_")
    assert "linked" not in sys.modules or getattr(sys.modules["linked"], "fn", None) is None


def test_the_target_importer_refuses_a_module_that_is_not_its_project_file(code_root: Path,
                                                                          clean_imports: None) -> None:
    import types

    from repro.source.project_import import import_target

    (code_root / "shadowed.py").write_text("def fn(x):\n    return x\n")
    stale = types.ModuleType("shadowed")
    stale.__file__ = str(code_root.parent / "elsewhere.py")
    sys.modules["shadowed"] = stale  # imported from somewhere else before the build asked for it
    with pytest.raises(ConfigError, match=r"data\.preprocess\._target_ 'shadowed\.fn': imported .*elsewhere\.py, "
                                          r"but the project file is shadowed\.py"):
        import_target("shadowed.fn", code_root, "data.preprocess._target_")
    with pytest.raises(ConfigError, match=r"config key stages\.a\._target_: 'pkg' is not a module\.function path"):
        import_target("pkg", code_root, "stages.a._target_")
    with pytest.raises(ConfigError, match="pkg.steps has no function 'nope'"):
        import_target("pkg.steps.nope", code_root, "stages.a._target_")


def test_off_path_takes_a_folder_off_by_real_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from repro.syspath import off_path

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path / "real")
    monkeypatch.setattr(sys, "path", ["", ".", str(tmp_path / "link"), str(tmp_path), *sys.path])
    off_path(tmp_path / "real")
    assert sys.path[0] == str(tmp_path) and "" not in sys.path and "." not in sys.path


# --- one child-error protocol, one seeding function ----------------------------------------------


STAGES = """\
seed: 5
build: {profile: native, device: cpu, threads: 1, cpu_capability: default, precision: fp32,
        world_size: 1, deterministic: true, mkldnn: true, mkl_cbwr: null, kernels: vendor, unportable: record}
stages:
  boom:
    _target_: steps.boom
    outputs: [out/boom.txt]
  draw:
    _target_: steps.draw
    outputs: [out/draw.json]
"""
STEPS = """\
import json
import random
import sys


def boom(inputs, outputs):
    raise ValueError("kaboom")


def draw(inputs, outputs):
    outputs[0].write_text(json.dumps({"random": random.random(), "torch": "torch" in sys.modules,
                                      "path": [p for p in sys.path if p in ("", ".")]}))
"""


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    root = tmp_path / "staged"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "train.yaml").write_text(STAGES)
    (root / "steps.py").write_text(STEPS)
    return root


def test_a_stages_own_bug_comes_back_through_the_one_error_file_as_exit_4(staged: Path) -> None:
    r = run_repro(["run", "boom", "--quiet"], cwd=staged)
    assert r.code == 4, r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("stage boom: failed: ValueError: kaboom")
    assert not (staged / "out").exists()


def test_a_stage_is_seeded_by_the_one_function_and_never_has_the_root_on_its_path(staged: Path) -> None:
    import random

    from repro.environment.seeding import seed_everything

    r = run_repro(["run", "draw", "--quiet"], cwd=staged)
    assert r.code == 0, r.stderr
    drawn = json.loads((staged / "out" / "draw.json").read_text())
    seed_everything(5)
    assert drawn == {"random": random.random(), "torch": False, "path": []}


def test_one_seeding_function_and_it_imports_nothing() -> None:
    from repro.builder import stage_child
    from repro.environment import seeding
    from repro.train import determinism

    assert determinism.seed_everything is seeding.seed_everything is stage_child.seed_everything
    assert determinism.seed_everything(2**40 + 1) == {"python": 2**40 + 1, "numpy": 1, "torch": 2**40 + 1}
    code = ("import sys; from repro.environment.seeding import seed_everything; "
            "print(sorted(seed_everything(1)), 'torch' in sys.modules, 'numpy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.split() == ["['python']", "False", "False"]


def test_only_the_error_file_module_writes_a_childs_error_report() -> None:
    writers = [(rel, node.lineno) for rel, tree in modules() for node in ast.walk(tree)
               if isinstance(node, ast.Dict) and {"exit_code", "message"} <= {
                   k.value for k in node.keys if isinstance(k, ast.Constant)}]
    assert [rel for rel, _ in writers] == ["builder/error_file.py"], writers


# --- one digest function, one file-name module ---------------------------------------------------


def test_a_one_shot_sha256_is_always_canonical_sha256_bytes() -> None:
    """`hashlib.sha256(x).hexdigest()` is spelled only inside `sha256_bytes`; a hasher fed a stream may stay."""
    inline = [f"{rel}:{node.lineno}" for rel, tree in modules() if rel != "canonical.py"
              for node in ast.walk(tree)
              if isinstance(node, ast.Attribute) and node.attr == "hexdigest" and isinstance(node.value, ast.Call)
              and ast.unparse(node.value.func) == "hashlib.sha256" and node.value.args]
    assert inline == []
    import repro.safeio

    assert not hasattr(repro.safeio, "hash_fd"), "one descriptor hasher: repro.source.hashing.digest_fd"


def test_repros_file_names_are_spelled_only_in_filenames() -> None:
    import repro.filenames as names

    spelled = {v: k for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    # A new project's README (scaffold) is the project's own, not a model card that happens to share the name;
    # run.json's "checkpoints" is a key, not the folder.
    allowed = {("scaffold.py", "README.md"), ("train/resume.py", "checkpoints")}
    found = [f"{rel}:{node.lineno} {node.value!r} is filenames.{spelled[node.value]}"
             for rel, tree in modules() if rel != "filenames.py" for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in spelled
             and (rel, node.value) not in allowed]
    assert found == []


FORMS = """
import json, torch
from repro.train import kernels
kernels.enable(refuse=True)
g = torch.Generator().manual_seed(0)
r = lambda *s: torch.randn(*s, generator=g)
a, b, bias, ba, bb, bbias, v, vbias = r(5, 7), r(7, 3), r(5, 3), r(2, 5, 7), r(2, 7, 3), r(2, 5, 3), r(7), r(5)
cases = {"mm": (torch.mm, (a, b), {}), "bmm": (torch.bmm, (ba, bb), {}),
         "addmm": (torch.addmm, (bias, a, b), dict(beta=0.5, alpha=2.0)),
         "baddbmm": (torch.baddbmm, (bbias, ba, bb), dict(beta=0.5, alpha=2.0)),
         "addmv": (torch.addmv, (vbias, a, v), dict(beta=0.5, alpha=2.0))}
same = {}
for name, (fn, args, kw) in cases.items():
    want = fn(*args, **kw).numpy().tobytes()
    out = torch.empty(0)
    fn(*args, **kw, out=out)
    forms = [out.numpy().tobytes()]
    if kw:
        forms.append(getattr(args[0].clone(), name + "_")(*args[1:], **kw).numpy().tobytes())
    same[name] = all(f == want for f in forms)
print(json.dumps({"same": same, "unportable": kernels.unportable_seen()}))
"""


def test_the_out_and_in_place_products_give_the_functional_forms_bits() -> None:
    """portable.cpp writes every out= and in-place product with one pair of macros (ours, then copied)."""
    done = subprocess.run([sys.executable, "-c", FORMS], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"same": dict.fromkeys(("mm", "bmm", "addmm", "baddbmm", "addmv"), True), "unportable": []}
