"""A bigger build: the tiny LM at 27M parameters (examples/tiny-lm/configs/big.yaml).

    .venv/bin/python benchmarks/lm_big.py [--steps 20] [--repeats 2] [--no-loop]

The first cost measured at a size closer to real work; every figure is a ratio
against a baseline measured in the same run:
  1. loop overhead: repro's loop against a plain transformers + PyTorch loop on the
     same batches (benchmarks/lm_tokens.py's two loops), tokens/s;
  2. one checkpoint (model + AdamW state, safetensors + JSON + sha256 manifest,
     fsync, atomic rename) against `torch.save` of the same state with an fsync;
  3. `repro verify` (hash, rebuild in a fresh process, compare) against the
     `repro train` that wrote the lock;
  4. peak RSS of that `repro train` process.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import lm_tokens  # noqa: E402  (its two loops and the tokenize stage)

NAME = "big"


def _repro(args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(lm_tokens.REPO), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "repro", *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def checkpoint_vs_torch_save(root: Path, tmp: Path, repeats: int) -> tuple[float, float, int]:
    """Median seconds of one repro checkpoint and of torch.save (+fsync), for the big model with AdamW state."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from repro.canonical import canonical_json
    from repro.train import checkpoint
    from repro.train.sampling import OrderDigest, SampleOrder
    from repro.train.state import Parts, capture

    cfg = lm_tokens._config(root, NAME, [])
    model = GPT2LMHeadModel(GPT2Config(**{k: v for k, v in cfg["model"]["config"].items() if k != "_target_"}))
    opt = torch.optim.AdamW(model.parameters())
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()  # exp_avg and exp_avg_sq: the state is 3x the parameters
    parts, order = Parts(model, opt, None, None), SampleOrder(1000, 16, 0, True)
    record = {"inputs": {}, "build": {}, "resumes": []}
    ckpt, pt = tmp / "checkpoints", tmp / "state.pt"

    def repro_write() -> None:
        writers, state = capture(1, parts, order, [0.0], OrderDigest(), [])
        writers[checkpoint.STATE_NAME] = checkpoint.bytes_writer(canonical_json({**state, **record}))
        checkpoint.write(ckpt, 1, writers)
        shutil.rmtree(ckpt)

    def torch_save() -> None:
        with open(pt, "wb") as fh:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, fh)
            fh.flush()
            os.fsync(fh.fileno())

    times: dict[str, list[float]] = {"repro": [], "torch": []}
    for _ in range(repeats):  # interleaved
        for name, fn in (("repro", repro_write), ("torch", torch_save)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters())
    return statistics.median(times["repro"]), statistics.median(times["torch"]), params


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-loop", action="store_true", help="skip figure 1 (the loop against plain transformers)")
    a = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores; > 2 means the machine was not quiet)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "tiny-lm"
        shutil.copytree(lm_tokens.EXAMPLE, root, ignore=lambda d, names: {
            n for n in names if Path(d) == lm_tokens.EXAMPLE and n.split("-")[0] in ("data", "out")})
        lm_tokens.tokenize_stage(root, NAME, 1)
        plain_t, repro_t = [], []
        for _ in range(0 if a.no_loop else a.repeats):
            t, _, cfg = lm_tokens.repro_loop(root, NAME, a.steps)
            repro_t.append(t)
            plain_t.append(lm_tokens.plain_loop(root, cfg, a.steps)[0])
        if not a.no_loop:
            p, r = min(plain_t), min(repro_t)
            print(f"loop        {a.steps} steps; best of {a.repeats}: plain {p:.2f} s, repro {r:.2f} s, "
                  f"ratio {r / p:.3f}x (goal <= 1.05x)")
        ck, ts, params = checkpoint_vs_torch_save(root, tmp, a.repeats + 1)
        print(f"checkpoint  {params / 1e6:.1f}M parameters + AdamW state: repro {ck:.2f} s, torch.save+fsync "
              f"{ts:.2f} s, ratio {ck / ts:.2f}x")
        steps = [f"trainer.max_steps={a.steps}", "trainer.log_every=5"]  # the LM config writes no checkpoints
        train_s = _repro(["train", "--quiet", "--config-name", NAME, *steps], root)
        rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        verify_s = _repro(["verify", "--quiet", "--no-record", "--root", ".", "out-big/repro.lock"], root)
        print(f"train       repro train {train_s:.1f} s, peak RSS {rss_mib:.0f} MiB")
        print(f"verify      repro verify {verify_s:.1f} s, ratio to training {verify_s / train_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
