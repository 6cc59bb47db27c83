from __future__ import annotations

from typing import Any

import pytest

from repro.environment.machine import cpu_flags
from repro.environment.pins import check_capability, native_capability, pinned_environ, resolve_pins
from repro.errors import ConfigError, EnvironmentMismatch

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma sha_ni\n"
BUILD: dict[str, Any] = {
    "profile": "default", "device": "cpu", "threads": 2, "cpu_capability": "avx2", "precision": "fp32",
    "world_size": 1, "deterministic": True, "mkldnn": True, "mkl_cbwr": None,
}


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


def test_portable_profile_checks_both_keys() -> None:
    with pytest.raises(ConfigError, match="build.profile=portable.*build.precision"):
        resolve_pins({**BUILD, "profile": "portable", "precision": "bf16"}, seed=0)


def test_shell_knobs_are_replaced_by_pins() -> None:
    pins = resolve_pins(BUILD, seed=0)
    env = pinned_environ(pins, {"OMP_NUM_THREADS": "1", "MKL_CBWR": "AVX2", "HOME": "/h"})
    assert env["OMP_NUM_THREADS"] == "2" and "MKL_CBWR" not in env and env["HOME"] == "/h"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
