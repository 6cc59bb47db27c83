"""A native build's lock names its CPU; verify elsewhere stops at once (exit 3).

`build=native` trains with torch's own kernels, which MKL and oneDNN pick by CPU vendor and
model, so its lock records that CPU (`build.cpu`: vendor, family, model and MKL's code path).
Rebuilding on another CPU could only end in different bits after a whole training run, so
verify compares first: vendor, family and model from /proc/cpuinfo in verify's own process
(no torch, before any hashing), then MKL's code path in the rebuild child, before it hashes
or trains. The message names what differs and the profile that would have avoided it.
"""

from __future__ import annotations

from collections.abc import Mapping

from repro.environment.machine import cpu_identity
from repro.errors import EnvironmentMismatch
from repro.lock.types import CpuFacts, JsonObject, Lock
from repro.safeio import printable

_FIX = ("The release was built with build=native, whose bits belong to its CPU's vendor and model; rebuild on "
        "that CPU, or have it published with build=default (the same bits on every x86-64 CPU with AVX2)")


def recorded_cpu(lock: Lock) -> CpuFacts | None:
    """The CPU a native CPU build recorded; None for any other lock."""
    build = lock["build"]
    if build.get("kernels") != "vendor" or build.get("device") != "cpu":
        return None
    cpu = build.get("cpu")
    return None if cpu is None else cpu.copy()


def require_same_cpu(lock: Lock) -> None:
    """In verify's process: refuse a native lock from another CPU vendor, family or model (exit 3)."""
    expected = recorded_cpu(lock)
    if expected is not None:
        _compare(expected, cpu_identity(), ("vendor", "family", "model"))


def require_same_cpu_here(expected: Mapping[str, object], resolved: JsonObject) -> None:
    """In the rebuild child, under the pins: the same CPU and the same MKL code path, before any hashing."""
    from repro.train.determinism import mkl_code_path

    _compare(expected, {**cpu_identity(), "mkl": mkl_code_path()}, ("vendor", "family", "model", "mkl"))


def _compare(expected: Mapping[str, object], here: Mapping[str, object], keys: tuple[str, ...]) -> None:
    for key in keys:
        if expected.get(key) != here.get(key):
            what = "MKL code path" if key == "mkl" else f"CPU {key}"
            raise EnvironmentMismatch(
                f"{what} differs: the lock was built on {printable(str(expected.get(key)))}, this machine is "
                f"{printable(str(here.get(key)))}. {_FIX}")
