from __future__ import annotations

from typing import Any

import pytest
import yaml

from repro.environment.machine import cpu_flags
from repro.environment.pins import BUILD_KEYS, check_capability, native_capability, pinned_environ, resolve_pins
from repro.errors import ConfigError, EnvironmentMismatch
from repro.source.inputs import PACKAGE_DIR

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma sha_ni\n"


def profile(name: str) -> dict[str, Any]:
    """A shipped build profile, as repro's config group holds it."""
    loaded: dict[str, Any] = yaml.safe_load((PACKAGE_DIR / "configs" / "build" / f"{name}.yaml").read_text())
    return loaded


BUILD = profile("default")
NATIVE = profile("native")


def test_every_profile_pins_every_key_as_a_value() -> None:
    for build in (BUILD, NATIVE):
        assert sorted(build) == sorted(BUILD_KEYS)
        assert resolve_pins(build, seed=0).threads == 2  # a number, not 'auto'
    assert resolve_pins(BUILD, seed=0).kernels == "portable"
    assert resolve_pins(NATIVE, seed=0).kernels == "vendor"


@pytest.mark.parametrize(("change", "needle"), [
    ({"kernels": "vendor"}, "build.profile=default with build.kernels=vendor"),
    ({"cpu_capability": "avx512"}, "build.cpu_capability=avx512"),
    ({"mkldnn": True}, "build.mkldnn=true"),
    ({"kernels": "fast"}, "build.kernels"),
    ({"unportable": "ignore"}, "build.unportable"),
])
def test_the_default_profile_refuses_pins_that_break_its_promise(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve_pins({**BUILD, **change}, seed=0)


def test_the_default_profile_takes_bf16_and_the_gpu_and_native_takes_only_vendor_kernels() -> None:
    assert resolve_pins({**BUILD, "precision": "bf16"}, seed=0).precision == "bf16"
    assert resolve_pins({**BUILD, "device": "cuda", "mkldnn": True}, seed=0).device == "cuda"
    with pytest.raises(ConfigError, match="build.profile=native needs build.kernels=vendor"):
        resolve_pins({**NATIVE, "kernels": "portable"}, seed=0)


def test_avx512_on_an_avx2_cpu_is_refused_before_torch_can_sigill() -> None:
    flags = cpu_flags(AVX2_ONLY)
    assert native_capability(flags) == "avx2"
    check_capability("avx2", flags)
    with pytest.raises(EnvironmentMismatch, match="avx512f"):
        check_capability("avx512", flags)


def test_arm_level_on_x86_is_refused() -> None:
    with pytest.raises(EnvironmentMismatch, match="sve256"):
        check_capability("sve256", {"avx2"})


def test_auto_threads_become_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("repro.environment.pins.machine_cores", lambda: 7)
    assert resolve_pins({**BUILD, "threads": "auto"}, seed=3).threads == 7


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("threads", 0, "build.threads"),
    ("precision", "fp8", "build.precision"),
    ("profile", "fast", "build.profile"),
])
def test_bad_pins_name_the_key(key: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve_pins({**BUILD, key: value}, seed=0)


def test_shell_knobs_are_replaced_by_pins() -> None:
    shell = {"OMP_NUM_THREADS": "1", "MKL_CBWR": "AVX2", "HOME": "/h"}
    env = pinned_environ(resolve_pins(BUILD, seed=0), shell)
    assert env["OMP_NUM_THREADS"] == "2" and env["MKL_CBWR"] == "COMPATIBLE" and env["HOME"] == "/h"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert "MKL_CBWR" not in pinned_environ(resolve_pins(NATIVE, seed=0), shell)  # MKL's own choice, not the shell's
