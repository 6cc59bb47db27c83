"""CUDA determinism: skipped without a GPU; run on a GPU host with `pytest -m gpu`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY, run_repro, sha256_file

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_two_gpu_runs_are_bit_identical_and_record_the_gpu(project: Path) -> None:
    outs = []
    for name in ("a", "b"):
        r = run_repro(["train", "--quiet", *TINY, "build.device=cuda", f"out_dir={name}"], cwd=project)
        assert r.code == 0, r.stderr
        outs.append(project / name)
    assert sha256_file(outs[0] / "model.safetensors") == sha256_file(outs[1] / "model.safetensors")
    assert (outs[0] / "repro.lock").read_bytes() == (outs[1] / "repro.lock").read_bytes()
    lock = (outs[0] / "repro.lock").read_text()
    assert torch.cuda.get_device_name(0) in lock and "compute_capability" in lock
