"""Apply the pins inside torch. Every function returns what it set, for the lock.

`repro.environment.pins` decides the values without importing torch; this module is the only
place that turns them into torch flags, so there is one switchboard to audit. It re-exports the
one seeding function (`repro.environment.seeding`): with numpy and torch imported here, it seeds all three.
"""

from __future__ import annotations

import functools
import os
import random
import sys
import tempfile
from collections.abc import Callable

import numpy as np
import torch

from repro.environment.machine import cpu_identity
from repro.environment.pins import Pins
from repro.environment.seeding import seed_everything as seed_everything
from repro.errors import EnvironmentMismatch
from repro.lock.types import CpuFacts, CudaFacts


def apply_torch_pins(pins: Pins) -> dict[str, bool | int | str]:
    """Set threads, deterministic algorithms, oneDNN, cuDNN and TF32 from the pins.

    Raises EnvironmentMismatch if torch already dispatches at another CPU level
    (it was imported before `ATEN_CPU_CAPABILITY` could be set).
    """
    actual = torch.backends.cpu.get_cpu_capability().lower()
    if actual != pins.cpu_capability.lower():
        raise EnvironmentMismatch(
            f"torch dispatches at CPU level {actual!r} but the pin is {pins.cpu_capability!r}: "
            "ATEN_CPU_CAPABILITY must be set before torch is imported (run `repro train` in a fresh process)"
        )
    torch.set_num_threads(pins.threads)
    kernels: dict[str, bool | str] = {"kernels": "vendor"}
    if pins.kernels == "portable":
        from repro.train import kernels as portable

        kernels = portable.enable(refuse=pins.unportable == "refuse", cpu=pins.device == "cpu")
    torch.use_deterministic_algorithms(pins.deterministic, warn_only=False)
    torch.backends.mkldnn.enabled = pins.mkldnn  # type: ignore[assignment]  # a ContextProp setter
    # TF32 trades mantissa bits for speed on Ampere+; off, always.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    set_flags: dict[str, bool | int | str] = {
        "threads": torch.get_num_threads(),
        "cpu_capability": actual,
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "mkldnn": bool(torch.backends.mkldnn.enabled),  # a bool at run time; typed as the ContextProp
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "tf32": False,
        **kernels,
    }
    if pins.device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        set_flags["cublas_workspace_config"] = os.environ["CUBLAS_WORKSPACE_CONFIG"]
        # Filling fresh memory with NaN costs time and does not change results for
        # code that writes before it reads; record the choice either way.
        import torch.utils.deterministic as tud

        tud.fill_uninitialized_memory = True  # type: ignore[attr-defined]  # a module property
        set_flags["fill_uninitialized_memory"] = True
    return set_flags


def cpu_facts(pins: Pins) -> CpuFacts | None:
    """What decides a native CPU build's bits besides its pins (the lock's build.cpu): the CPU's
    vendor, family and model, and the code path MKL chose for it. None for the portable kernels,
    whose bits no CPU fact decides, and on a GPU."""
    if pins.kernels != "vendor" or pins.device != "cpu":
        return None
    cpu = cpu_identity()
    return {"vendor": cpu["vendor"], "family": cpu["family"], "model": cpu["model"], "mkl": mkl_code_path()}


@functools.cache
def mkl_code_path() -> str | None:
    """The instruction set MKL dispatches to on this CPU, from its verbose banner, e.g. 'Intel(R) Advanced
    Vector Extensions 512 (Intel(R) AVX-512) with support for INT8, ...'; None without MKL."""
    if not torch.backends.mkl.is_available():  # type: ignore[no-untyped-call]  # torch leaves it untyped
        return None

    def one_gemm() -> None:
        with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):  # type: ignore[no-untyped-call]
            torch.mm(torch.ones(2, 2), torch.ones(2, 2))

    banner = _stdout_of(one_gemm)
    for line in banner.splitlines():
        if line.startswith("MKL_VERBOSE") and " architecture " in line:
            return line.split(" architecture ", 1)[1].rsplit(", Lnx", 1)[0].strip()
    return None


def _stdout_of(fn: Callable[[], None]) -> str:
    """What `fn` writes to file descriptor 1 (a C library's printf), captured instead of shown."""
    sys.stdout.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(1)
        os.dup2(capture.fileno(), 1)
        try:
            fn()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        return capture.read().decode(errors="replace")


def torch_generator(seed: int) -> torch.Generator:
    """A CPU generator of its own, so sample order never shares state with init."""
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: derive every library's seed from torch's."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def cuda_facts() -> CudaFacts | None:
    """GPU model, capability and library versions, for the lock; None on CPU."""
    if not torch.cuda.is_available():
        return None
    idx = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(idx)
    facts: CudaFacts = {
        "gpu": torch.cuda.get_device_name(idx),
        "compute_capability": f"{major}.{minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
    }
    return facts
