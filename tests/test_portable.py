"""The default profile's portable kernels (docs/portable.md): the arithmetic they promise, checked
exactly, in fresh processes and real builds.

Bits are compared by sha256 or exactly, never with a tolerance. The vector-width claim (the AVX2
and the AVX-512 code give the same bits) is checked where this CPU has AVX-512; on an AVX2-only
CPU those tests skip, saying so. Other CPU models: tests/test_check.py runs builds under qemu-user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY, run_repro, sha256_file
from fixtures.portable.products import SHAPES, inputs

from repro.environment.machine import cpu_flags, cpu_identity

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "portable"
AVX512 = "avx512f" in cpu_flags()
wide = pytest.mark.skipif(not AVX512, reason="this CPU has no AVX-512: the AVX2 kernels are the only ones here")


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A fixture script in a fresh process: the kernels replace torch's for good in the process they load in."""
    full = {k: v for k, v in os.environ.items() if k != "REPRO_KERNEL_ISA"}
    full.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, *args], env=full, capture_output=True, text=True, timeout=300)


def op_digests(*args: str, env: dict[str, str] | None = None) -> dict[str, list[str]]:
    done = run_script(str(FIXTURES / "op_digests.py"), *args, env=env)
    assert done.returncode == 0, done.stderr
    loaded: dict[str, list[str]] = json.loads(done.stdout)
    return loaded


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """tests/fixtures/portable/products.py's results, computed once under the portable kernels."""
    path = tmp_path_factory.mktemp("products") / "products.npz"
    done = run_script(str(FIXTURES / "products.py"), str(path))
    assert done.returncode == 0, done.stderr
    with np.load(path) as loaded:
        return {k: loaded[k] for k in loaded.files}


# --- the GEMM: one FMA chain per element, k ascending ------------------------------------------


def round_f32(x: Fraction) -> np.float32:
    """`x` rounded to the nearest float32, ties to even: exact, with no double rounding."""
    guess = np.float32(float(x))
    best = min((guess, np.nextafter(guess, np.float32(np.inf)), np.nextafter(guess, np.float32(-np.inf))),
               key=lambda c: (abs(Fraction(float(c)) - x), int(np.float32(c).view(np.uint32)) & 1))
    return np.float32(best)


def chain(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The specification: c = fma(a[i,k], b[k,j], c) for k ascending from c = 0, each fma rounded once."""
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.float32)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            c = np.float32(0)
            for k in range(a.shape[1]):
                c = round_f32(Fraction(float(a[i, k])) * Fraction(float(b[k, j])) + Fraction(float(c)))
            out[i, j] = c
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_every_product_is_the_fma_chain_in_every_layout(products: dict[str, np.ndarray],
                                                        shape: tuple[int, int, int]) -> None:
    m, k, n = shape
    a, b = inputs(m, k, n)
    want = chain(a.numpy(), b.numpy())
    tag = f"{m}x{k}x{n}"
    for layout in ("rr", "rc", "cr", "cc"):
        assert np.array_equal(products[f"mm/{tag}/{layout}"], want), layout
    assert np.array_equal(products[f"bmm/{tag}"], want)
    assert np.array_equal(products[f"mv/{tag}"], want[:, 0])
    assert products[f"dot/{tag}"][0] == chain(a.numpy()[:1], b.numpy()[:, :1])[0, 0]


def test_addmm_starts_the_chain_at_the_bias_and_bf16_rounds_once(products: dict[str, np.ndarray]) -> None:
    a, b, bias = products["addmm/a"], products["addmm/b"], products["addmm/bias"]
    want = np.zeros((4, 3), dtype=np.float32)
    for i in range(4):
        for j in range(3):
            c = bias[j]
            for k in range(6):
                c = round_f32(Fraction(float(a[i, k])) * Fraction(float(b[k, j])) + Fraction(float(c)))
            want[i, j] = c
    assert np.array_equal(products["addmm"], want)
    assert np.array_equal(products["bf16"], products["bf16/want"])


def test_thread_counts_change_no_product(products: dict[str, np.ndarray]) -> None:
    assert np.array_equal(products["threads/1"], products["threads/2"])
    assert np.array_equal(products["threads/1"], products["threads/3"])


def test_float64_products_are_refused_and_integers_keep_atens_own(products: dict[str, np.ndarray]) -> None:
    assert "repro-portable: aten::mm on Double has no portable kernel" in products["float64"].tobytes().decode()
    assert np.array_equal(products["long"], np.full((3, 3), 3))


# --- every operator family, across vector widths --------------------------------------------------


@wide
def test_avx2_and_avx512_give_the_same_bits_for_every_operator_family() -> None:
    """Forward and backward of each family the issue lists: the AVX-512 GEMM and vector math against
    the AVX2 ones, which are the code every other x86-64 CPU runs."""
    avx512, avx2 = op_digests("portable"), op_digests("portable", env={"REPRO_KERNEL_ISA": "avx2"})
    assert avx512.keys() == avx2.keys() and len(avx512) >= 17
    assert avx512 == avx2


@wide
def test_vector_math_widths_agree_on_samples_of_every_float() -> None:
    """scripts/check_vector_widths.py runs all 2^32 inputs; here, 2^14 patterns in each of 16 ranges."""
    done = run_script(str(REPO / "scripts" / "check_vector_widths.py"), "--sample", str(1 << 14))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": 0 of ") == 14, done.stdout


def test_no_mkl_blas_call_under_the_portable_kernels() -> None:
    """MKL prints a line for every BLAS call under MKL_VERBOSE: the operator families make none."""
    done = run_script(str(FIXTURES / "op_digests.py"), "portable", env={"MKL_VERBOSE": "1"})
    assert done.returncode == 0, done.stderr
    assert "MKL_VERBOSE" not in done.stdout + done.stderr
    native = run_script(str(FIXTURES / "op_digests.py"), "native", env={"MKL_VERBOSE": "1"})
    assert "SGEMM" in native.stdout  # the check can see MKL: torch's own kernels call it


# --- what cannot be made portable --------------------------------------------------------------


UNPORTABLE_MODEL = '''
import torch

class QRNet(torch.nn.Module):
    """A linear layer whose weight is orthogonalised by QR every step: LAPACK, MKL's own code."""

    def __init__(self, in_features: int = 64, out_features: int = 10) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, _ = torch.linalg.qr(self.weight.t())
        return x @ q
'''


def test_an_unportable_operator_is_refused_naming_it_or_recorded_when_asked(project: Path) -> None:
    (project / "qrnet.py").write_text(UNPORTABLE_MODEL)
    (project / "configs" / "model" / "qr.yaml").write_text("_target_: qrnet.QRNet\n")
    refused = run_repro(["train", "--quiet", *TINY, "model=qr", "out_dir=refused"], cwd=project)
    assert refused.code == 3, refused.stderr
    assert "aten::linalg_qr" in refused.stderr and "build=native" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert not (project / "refused" / "repro.lock").exists()
    recorded = run_repro(["train", "--quiet", *TINY, "model=qr", "out_dir=recorded", "build.unportable=record"],
                         cwd=project)
    assert recorded.code == 0, recorded.stderr
    lock = json.loads((project / "recorded" / "repro.lock").read_text())
    assert lock["build"]["unportable"] == "record"
    assert any(name.startswith("aten::linalg_qr") for name in lock["build"]["flags"]["unportable"])


# --- build=native: tied to its CPU, and says so at once -----------------------------------------


def test_a_native_lock_records_its_cpu_and_another_vendor_stops_verify_at_once(project: Path) -> None:
    r = run_repro(["train", "--quiet", *TINY, "build=native", "out_dir=native"], cwd=project)
    assert r.code == 0, r.stderr
    lock_path = project / "native" / "repro.lock"
    lock = json.loads(lock_path.read_text())
    here = cpu_identity()
    assert lock["build"]["cpu"]["vendor"] == here["vendor"] and lock["build"]["cpu"]["model"] == here["model"]
    assert lock["build"]["kernels"] == "vendor" and "kernels" not in lock["toolchain"]
    assert run_repro(["verify", "--quiet", "--no-record", str(lock_path)], cwd=project).code == 0
    other = "AuthenticAMD" if here["vendor"] == "GenuineIntel" else "GenuineIntel"
    lock["build"]["cpu"]["vendor"] = other
    lock_path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    started = time.monotonic()
    refused = run_repro(["verify", "--quiet", "--no-record", str(lock_path)], cwd=project)
    assert refused.code == 3 and time.monotonic() - started < 10, refused.stderr
    assert other in refused.stderr and here["vendor"] in refused.stderr and "build=default" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_the_default_profile_lock_records_no_cpu_and_its_compiler(project: Path) -> None:
    r = run_repro(["train", "--quiet", *TINY, "out_dir=default"], cwd=project)
    assert r.code == 0, r.stderr
    lock = json.loads((project / "default" / "repro.lock").read_text())
    assert lock["build"]["cpu"] is None and lock["build"]["kernels"] == "portable"
    assert lock["toolchain"]["kernels"]["cxx"].split()[0] in ("gcc", "clang")
    files = {f["path"] for f in lock["toolchain"]["repro"]["files"]}
    assert {"repro/train/kernels/portable.cpp", "repro/train/kernels/gemm.h"} <= files
    assert sha256_file(project / "default" / "model.safetensors") == lock["outputs"]["weights"]["hashes"]["sha256"]
