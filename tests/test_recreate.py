"""`repro verify --toolchain recreate`: the lock's toolchain installed fresh, checked, reused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import run_repro

from repro.errors import EnvironmentMismatch
from repro.verify import recreate

TOOLCHAIN: dict[str, Any] = {
    "python": {"implementation": "CPython", "version": "3.11.7"},
    "platform": {"system": "Linux", "machine": "x86_64", "libc": "glibc 2.36"},
    "distributions": {"numpy": "2.4.6", "PyYAML": "6.0.4", "torch": "2.13.0+cpu"},
    "torch": {"version": "2.13.0+cpu", "build": "cpu", "commit": None, "cuda": None, "cudnn": None, "mkl": None,
              "onednn": None},
    "repro": {"version": "0.2.0", "files": [], "root_digest": "ab" * 32},
}


def test_requirements_pin_every_distribution_torch_build_and_repro() -> None:
    assert recreate.requirements(TOOLCHAIN) == ["numpy==2.4.6", "PyYAML==6.0.4", "repro==0.2.0", "torch==2.13.0+cpu"]


def test_the_cache_key_changes_with_the_toolchain_not_the_machine() -> None:
    other = json.loads(json.dumps(TOOLCHAIN))
    other["platform"]["libc"] = "glibc 2.41"
    assert recreate.toolchain_digest(other) == recreate.toolchain_digest(TOOLCHAIN)
    other["distributions"]["numpy"] = "2.4.7"
    assert recreate.toolchain_digest(other) != recreate.toolchain_digest(TOOLCHAIN)


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_an_uninstallable_package_is_exit_3_naming_it(installer: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if installer == "uv" and recreate.find_uv() is None:
        pytest.skip("uv is not installed")
    monkeypatch.setenv("REPRO_TOOLCHAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("REPRO_TOOLCHAIN_INSTALLER", installer)
    monkeypatch.setenv("UV_OFFLINE", "1")  # no registry needed to know a made-up name is not there
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setattr(recreate, "pip_index_options", lambda: [])
    broken = {**TOOLCHAIN, "distributions": {"repro-no-such-distribution": "1.0"}, "torch": None}
    # Neither is installable offline; pip names the first, uv the first its resolver meets.
    with pytest.raises(EnvironmentMismatch, match=r"package (repro-no-such-distribution|repro) is not installable"
                       ) as err:
        recreate.provision(broken, [])
    assert err.value.exit_code == 3


@pytest.mark.slow
def test_recreate_builds_repros_own_wheel_from_this_installation_then_reuses_it(tmp_path: Path) -> None:
    """No --find-links: the lock's repro is the one installed here, so its wheel is built from it (an
    editable install: `pip wheel` of the checkout) and cached beside the toolchains."""
    assert r_ok(run_repro(["init", "proj"], cwd=tmp_path))
    project = tmp_path / "proj"
    assert r_ok(run_repro(["train", "--quiet", "trainer.max_steps=20"], cwd=project))
    env = {"REPRO_TOOLCHAIN_CACHE": str(tmp_path / "toolchains")}
    args = ["verify", "--quiet", "--json", "--toolchain", "recreate", "out/repro.lock"]
    first = run_repro(args, cwd=project, env=env)
    assert first.code == 0, (first.stdout, first.stderr)
    made = json.loads(first.stdout)["result"]["rebuild"]["toolchain"]
    assert made["mode"] == "recreate" and made["cached"] is False
    assert Path(made["python"]).parent.parent.parent == tmp_path / "toolchains"
    second = run_repro(args, cwd=project, env=env)
    assert second.code == 0, (second.stdout, second.stderr)
    again = json.loads(second.stdout)["result"]["rebuild"]["toolchain"]
    assert again["cached"] is True and again["path"] == made["path"]
    assert [w.name for w in (tmp_path / "wheels").glob("repro-*/*.whl")] == ["repro-0.2.0-py3-none-any.whl"]


def test_repros_own_wheel_is_made_only_for_the_version_installed_here(tmp_path: Path) -> None:
    from repro import __version__
    from repro.verify.own_wheel import own_wheel_dir

    assert own_wheel_dir("0.0.1", tmp_path) is None  # another repro: its wheel must come from --find-links
    folder = own_wheel_dir(__version__, tmp_path)
    assert folder is not None and [w.name for w in folder.glob("*.whl")] == [f"repro-{__version__}-py3-none-any.whl"]
    assert own_wheel_dir(__version__, tmp_path) == folder  # found in the cache the second time


def r_ok(r: Any) -> bool:
    assert r.code == 0, (r.stdout, r.stderr, os.getcwd())
    return True
