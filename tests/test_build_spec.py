"""A build is a value: `BuildSpec` is made once, crosses to the child as checked JSON, and the
build reads everything from it (the root, out_dir, pins, typed specs and the data files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from repro.builder.child import child_environ
from repro.builder.result import BuildReport
from repro.builder.spec import BuildSpec, make_spec, with_pins
from repro.environment.pins import BUILD_KEYS
from repro.source.compose import compose
from repro.source.config import find_config
from repro.train.resume import ResumeOptions

STEPS = ["trainer.max_steps=3", "trainer.log_every=1"]


def embedded_spec(out_dir: Path, overrides: list[str] = STEPS) -> BuildSpec:
    source = find_config(None, "train", None, Path(tempfile.gettempdir()))  # no configs/ there: the example
    return make_spec(compose(source, overrides), source.root.resolve(), out_dir,
                     resume=ResumeOptions(mode="fresh"), rehash=True)


def test_a_spec_survives_its_json_exactly(tmp_path: Path) -> None:
    spec = embedded_spec(tmp_path / "out")
    assert BuildSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    gated = replace(spec, served={"repro/models.py": "ab" * 32}, gate=(("model", "repro.models.MLP", "class"),),
                    expect_cpu={"vendor": "GenuineIntel"})
    assert BuildSpec.from_json(json.loads(json.dumps(gated.to_json()))) == gated


def test_pins_are_written_back_as_values(tmp_path: Path) -> None:
    spec = embedded_spec(tmp_path / "out", [*STEPS, "build.threads=auto"])
    assert spec.resolved["build"]["threads"] == spec.pins.threads and isinstance(spec.pins.threads, int)
    assert {k: spec.resolved["build"][k] for k in BUILD_KEYS} == {k: getattr(spec.pins, k) for k in BUILD_KEYS}
    assert with_pins(spec.resolved, spec.pins) == spec.resolved  # writing them again changes nothing


@pytest.mark.parametrize("path, value, named", [
    (("recipe", "pins", "threads"), "2", "build spec.recipe.pins.threads"),
    (("recipe", "trainer", "shuffle"), 1, "build spec.recipe.trainer.shuffle"),
    (("recipe", "files", "trained"), "data.csv", "build spec.recipe.files.trained"),
    (("resume", "mode"), "sometimes", "build spec.resume.mode"),
    (("recipe", "root"), None, "build spec.recipe.root"),
])
def test_the_child_refuses_a_spec_of_the_wrong_shape(tmp_path: Path, path: tuple[str, ...], value: object,
                                                   named: str) -> None:
    raw = json.loads(json.dumps(embedded_spec(tmp_path / "out").to_json()))
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(TypeError, match=named.replace(".", r"\.")):
        BuildSpec.from_json(raw)
    with pytest.raises(TypeError, match="unknown field 'extra'"):
        BuildSpec.from_json({**json.loads(json.dumps(embedded_spec(tmp_path / "o").to_json())), "extra": 1})


def test_the_report_survives_its_json(tmp_path: Path) -> None:
    report = BuildReport(tmp_path, "a" * 64, "b" * 64, "c" * 64, "d" * 64, {"accuracy": 0.5}, None, 1.0, 3, ("x",))
    assert BuildReport.from_json(json.loads(json.dumps(report.to_json()))) == report


# In a process with the build child's own environment: make the spec (counting every call that
# resolves the data), make the root finders fail, then build from the spec alone.
ONE_BUILD = r"""
import json, sys
from pathlib import Path
import repro.source.data as data
import repro.source.walk as walk
from repro.source.compose import compose
from repro.source.config import find_config
from repro.train.resume import ResumeOptions

calls = {"DataSpec.from_config": 0, "data glob": 0}
from_config = data.DataSpec.from_config.__func__
def counted_from_config(cls, cfg):
    calls["DataSpec.from_config"] += 1
    return from_config(cls, cfg)
data.DataSpec.from_config = classmethod(counted_from_config)
expand = walk.expand_patterns
def counted_expand(root, patterns, *args, **kwargs):
    if list(patterns) == ["repro/examples/digits/digits.csv"]:
        calls["data glob"] += 1
    return expand(root, patterns, *args, **kwargs)
for name, module in list(sys.modules.items()):
    if name.startswith("repro.") and getattr(module, "expand_patterns", None) is expand:
        module.expand_patterns = counted_expand
walk.expand_patterns = counted_expand

from repro.builder.spec import make_spec
from repro.builder.build import build

out_dir, cwd = Path(sys.argv[1]), Path(sys.argv[2])
source = find_config(None, "train", None, cwd)
resolved = compose(source, ["trainer.max_steps=3", "out_dir=somewhere/else"])
spec = make_spec(resolved, source.root.resolve(), out_dir, resume=ResumeOptions(mode="fresh"))

def no_finder(*args, **kwargs):
    raise AssertionError("a root finder ran after the spec was made")
import repro.source.config, repro.verify.verifier
repro.source.config.find_config = no_finder
repro.verify.verifier.find_root = no_finder
report = build(spec, lambda message: None)
print(json.dumps({"calls": calls, "weights": report.weights_sha256, "hashed": list(spec.recipe.files.hashed),
                  "trained": list(spec.recipe.files.trained)}))
"""


@pytest.mark.slow
def test_one_build_resolves_its_data_once_and_finds_no_root(tmp_path: Path) -> None:
    """DataSpec.from_config and the data glob run once per build, spec and child together; the root and
    out_dir come from the spec (the config's own out_dir is ignored, and no finder is called)."""
    spec = embedded_spec(tmp_path / "out")
    env = child_environ(spec.pins, tmp_path)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-c", ONE_BUILD, str(tmp_path / "out"), str(tmp_path)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["calls"] == {"DataSpec.from_config": 1, "data glob": 1}
    lock = json.loads((tmp_path / "out" / "repro.lock").read_text())
    assert [f["path"] for f in lock["inputs"]["data"]["files"]] == result["hashed"] == result["trained"]
    assert not (tmp_path / "somewhere").exists() and os.listdir(tmp_path / "out")


@pytest.mark.slow
def test_verify_finds_the_root_before_the_spec_and_never_after(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """verify finds a lock's project root once, first; from the rebuild's spec on, no finder runs."""
    import repro.source.config
    import repro.verify.rebuild_compare as rebuild
    import repro.verify.verifier
    from repro.verify.report import VerifyOptions

    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "repro", "train", "--quiet", *STEPS, f"out_dir={out}"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    made: list[BuildSpec] = []
    spec_from_lock = rebuild.spec_from_lock

    def then_no_finder(*args: object, **kwargs: object) -> BuildSpec:
        spec = spec_from_lock(*args, **kwargs)  # type: ignore[arg-type]
        made.append(spec)

        def no_finder(*args: object, **kwargs: object) -> None:
            raise AssertionError("a root finder ran after the spec was made")
        monkeypatch.setattr(repro.verify.verifier, "find_root", no_finder)
        monkeypatch.setattr(repro.source.config, "find_config", no_finder)
        return spec

    monkeypatch.setattr(rebuild, "spec_from_lock", then_no_finder)
    report = repro.verify.verifier.verify(VerifyOptions(lock_path=out / "repro.lock", work_dir=tmp_path / "work",
                                                        record=False, sandbox=False))
    lock = json.loads((out / "repro.lock").read_text())
    assert report.identical and report.rebuild is not None and report.rebuild["performed"]
    assert report.rebuild["weights_sha256"] == lock["outputs"]["weights"]["hashes"]["sha256"]
    assert [s.out_dir for s in made] == [tmp_path / "work" / "out"] and made[0].root.is_absolute()
