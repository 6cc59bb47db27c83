"""Load repro's portable CPU kernels into this build process (docs/portable.md).

`repro.environment.kernels` builds the library in the launching process; here the build child loads
it, which replaces torch's vendor-dispatched CPU kernels (GEMM, convolution, MKL's vector math,
MKL's Bernoulli sampler, the flash attention kernel) for every operator call that follows. What the
library cannot make portable is handled by `build.unportable`: `refuse` (the default) stops the
build with exit 3 naming the operator at its first call, before the step it is in completes;
`record` lets torch run it and lists it in the lock (`build.flags.unportable`), so the lock says
that its bits may depend on the CPU.

Importing this module is what puts the kernel sources into the lock's compiler record
(`__compiler_sources__`, read by `repro.environment.toolchain.compiler_files`), so it is imported
only by builds that load the library.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from repro.environment.kernels import SOURCES
from repro.errors import EnvironmentMismatch

__compiler_sources__ = SOURCES  # the C++ this module loads: compiler sources (see the module docstring)

# Set by the launching process (repro.builder.child.LIBRARY_VARIABLE) to the library it built; a child
# started some other way builds (or finds) it itself.
LIBRARY_VARIABLE = "REPRO_PORTABLE_LIBRARY"
# Operators whose CPU kernels reach LAPACK, MKL's FFT, FBGEMM, oneDNN or MKL's GEMM from inside
# ATen, where no dispatch can reroute them: never portable. (`linalg_vector_norm` and the other
# reductions are ATen's own code and are not here.)
UNPORTABLE = (
    "_linalg_det", "_linalg_eigh", "_linalg_slogdet", "_linalg_solve_ex", "_linalg_svd", "cholesky",
    "cholesky_inverse", "cholesky_solve", "geqrf", "linalg_cholesky_ex", "linalg_eig", "linalg_householder_product",
    "linalg_inv_ex", "linalg_ldl_factor_ex", "linalg_ldl_solve", "linalg_lstsq", "linalg_lu", "linalg_lu_factor_ex",
    "linalg_lu_solve", "linalg_qr", "linalg_solve_triangular", "ormqr", "triangular_solve",
    "_fft_c2c", "_fft_c2r", "_fft_r2c",
    "_embedding_bag", "_embedding_bag_forward_only",
    "_addmm_activation", "_native_multi_head_attention", "_transformer_encoder_layer_fwd",
    "mkldnn_convolution", "mkldnn_linear", "mkldnn_rnn_layer", "_convolution", "_slow_conv2d_forward",
    "_slow_conv2d_backward", "slow_conv_dilated2d", "slow_conv3d_forward", "slow_conv_transpose2d",
)
_MARKER = re.compile(r"repro-portable: (.*?) has no portable kernel")
_library: torch.library.Library | None = None
_recorder: _Recorder | None = None


def enable(refuse: bool, cpu: bool = True) -> dict[str, bool | str]:
    """Load the library and route every later CPU call through it; the facts for the lock's flags.

    Once per process: torch has one dispatch table. `refuse` is `build.unportable == "refuse"`; `cpu`
    says the build trains on the CPU (a GPU build keeps nn.MultiheadAttention's fast path, a global).
    """
    global _library, _recorder
    if _library is not None:
        return facts()
    path = os.environ.get(LIBRARY_VARIABLE)
    if not path:
        from repro.environment.kernels import library

        path = str(library()[0])
    _load_quietly(path)
    # REPRO_KERNEL_ISA=avx2 runs the AVX2 GEMM on an AVX-512 machine: a test of the claim that the
    # vector width changes no bit, never a setting that does.
    torch.ops.repro_portable.configure(os.environ.get("REPRO_KERNEL_ISA") != "avx2", refuse)
    if cpu:
        # nn.MultiheadAttention's inference fast path is one fused kernel on MKL's GEMM; without it,
        # attention is linear layers and scaled_dot_product_attention, which the library covers.
        torch.backends.mha.set_fastpath_enabled(False)
    _library = torch.library.Library("aten", "IMPL")  # type: ignore[no-untyped-call]  # kept for the process
    if refuse:
        for name in _existing(UNPORTABLE):
            _library.impl(name, _refusal(name), "CPU")  # type: ignore[no-untyped-call]  # torch leaves it untyped
    else:
        _recorder = _Recorder()
        _recorder.__enter__()  # type: ignore[no-untyped-call]  # left entered: the whole build is recorded
    return facts()


def facts() -> dict[str, bool | str]:
    """What the lock records: the same on every machine (the GEMM's vector width is not here: it decides
    no bit, and run.json has it)."""
    return {"kernels": "portable", "gemm": "fma chain, k ascending", "sdpa": "flash, fixed order",
            "mha_fastpath": False}


def unportable_seen() -> list[str]:
    """The unportable operator calls this process made (only under `build.unportable: record`)."""
    seen = set(torch.ops.repro_portable.unportable_seen()) if _library is not None else set()
    if _recorder is not None:
        seen |= _recorder.seen
    return sorted(seen)


def compiler_version() -> str | None:
    """The compiler that built the loaded library ('gcc 12.2.0'), for the lock's toolchain; None if none is loaded."""
    return str(torch.ops.repro_portable.compiler()) if _library is not None else None


def gemm_isa() -> str:
    """Which GEMM kernel this CPU runs (avx512 or avx2), for run.json."""
    return str(torch.ops.repro_portable.gemm_isa()) if _library is not None else "none"


def unportable_error(exc: BaseException) -> EnvironmentMismatch | None:
    """The exit-3 error for a refused operator, from the RuntimeError it surfaced as (else None)."""
    match = _MARKER.search(str(exc))
    if match is None:
        return None
    return EnvironmentMismatch(
        f"{match.group(1)} has no portable kernel: under build.profile=default its bits would depend on this "
        "CPU's vendor and model. Use another operator, train with build=native (bits tied to this CPU), or set "
        "build.unportable=record to run it anyway and say so in the lock")


def _existing(names: tuple[str, ...]) -> list[str]:
    """The operator overloads of `names` that this torch has, with a CPU kernel."""
    out = []
    for name in names:
        packet = getattr(torch.ops.aten, name, None)
        if packet is None:
            continue
        for overload in packet.overloads():
            full = name if overload == "default" else f"{name}.{overload}"
            if torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{full}", "CPU"):
                out.append(full)
    return out


def _refusal(name: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"repro-portable: aten::{name} has no portable kernel")

    return refuse


class _Recorder(TorchDispatchMode):
    """Under `build.unportable: record`: note every unportable operator that runs, then run it."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.names = {f"aten::{n}" for n in UNPORTABLE}
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._schema.name
        if name in self.names:
            self.seen.add(name)
        return func(*args, **(kwargs or {}))


def _load_quietly(path: str) -> None:
    """torch.ops.load_library, without torch's one-time 'Overriding a previously registered kernel'
    warning on stderr (that override is the point); anything else it prints is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            torch.ops.load_library(path)  # type: ignore[no-untyped-call]  # torch leaves it untyped
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    kept = _without_override_warning(text)
    if kept:
        sys.stderr.write(kept)


def _without_override_warning(text: str) -> str:
    """`text` less the block of lines of torch's kernel-override warning."""
    lines, out, skipping = text.splitlines(keepends=True), [], False
    for line in lines:
        if "OperatorEntry.cpp" in line and "Warning" in line:
            skipping = True
            continue
        if skipping and (line.startswith("  ") or not line.strip()):
            continue
        skipping = False
        out.append(line)
    return "".join(out)

