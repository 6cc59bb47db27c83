"""Tiny LM: tokens/s of repro's loop against a plain transformers + PyTorch loop; tokenizer time.

    .venv/bin/python benchmarks/lm_tokens.py [--steps 60] [--repeats 3] [--config-name train]

Both loops train the example's GPT2LMHeadModel (examples/tiny-lm, the same
GPT2Config), from the same seed, on the same token blocks in the same batch
order (repro.train.sampling.SampleOrder), with the same AdamW and pins (2 threads,
ATEN_CPU_CAPABILITY=avx2, deterministic algorithms). Reported:
  * tokens/s of each loop, timed from the end of the first step to the end of
    the last, over interleaved repeats: the median and the best repeat (the best
    is the steadier figure on a loaded machine), and the ratio (goal <= 1.05x)
  * whether both loops produced the same weight bytes
  * tokenize stage: BPE training time and corpus encoding time (medians)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["ATEN_CPU_CAPABILITY"] = "avx2"  # before torch loads, as repro does
os.environ["HF_HUB_OFFLINE"] = "1"
REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "tiny-lm"
sys.path.insert(0, str(REPO))


def tokenize_stage(root: Path, config_name: str, repeats: int) -> tuple[float, float, int]:
    """Time BPE training and encoding (in-process, medians); write the stage's outputs."""
    spec = importlib.util.spec_from_file_location("tokenize_corpus", root / "tokenize_corpus.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = _config(root, config_name, [])
    t = cfg["tokenize"]
    from repro.source.walk import expand_patterns

    files = [root / p for p in expand_patterns(root, t["corpus"])]
    train_s, encode_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        tok = mod.train_tokenizer(files, t["vocab_size"], t["min_frequency"], t["end_of_text"])
        mid = time.perf_counter()
        mod.encode_blocks(tok, files, t["block_size"], t["end_of_text"])
        train_s.append(mid - start)
        encode_s.append(time.perf_counter() - mid)
    # The stage's outputs, as its users make them (a repro stage since tokenize_corpus.py lost its main).
    subprocess.run([sys.executable, "-m", "repro", "run", "tokenize", "--quiet", "--config-name", config_name],
                   cwd=root, check=True)
    return statistics.median(train_s), statistics.median(encode_s), sum(f.stat().st_size for f in files)


def _config(root: Path, name: str, overrides: list[str]) -> dict[str, Any]:
    from repro.source.compose import compose
    from repro.source.config import ConfigSource

    return compose(ConfigSource(root / "configs", name, root, embedded=False), overrides)


def repro_loop(root: Path, name: str, steps: int) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """repro's own loop via repro.train.loop.train; time between the first and last step's end."""
    from repro.builder.spec import make_spec
    from repro.train.loop import train

    spec = make_spec(_config(root, name, [f"trainer.max_steps={steps}"]), root, root / "out")
    marks: list[float] = []
    result = train(spec.recipe, on_step=lambda s, v: marks.append(time.perf_counter()))
    return marks[-1] - marks[0], result.state, spec.resolved


def plain_loop(root: Path, cfg: dict[str, Any], steps: int) -> tuple[float, dict[str, Any]]:
    """What a user would write with transformers and PyTorch, on repro's batches."""
    import torch
    from torch.nn import functional as F
    from transformers import GPT2Config, GPT2LMHeadModel

    from repro.source.data import DataSpec, data_file_list, load_splits
    from repro.tasks import CausalLM
    from repro.train.sampling import SampleOrder

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    spec = DataSpec.from_config(cfg)
    train_rows, _, _ = load_splits(root, spec, data_file_list(root, spec))
    ids = CausalLM().tensors(train_rows)["ids"]
    torch.manual_seed(cfg["seed"])
    model = GPT2LMHeadModel(GPT2Config(**{k: v for k, v in cfg["model"]["config"].items() if k != "_target_"}))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["trainer"]["lr"],
                            weight_decay=cfg["trainer"]["optimizer"]["weight_decay"])
    order = SampleOrder(ids.shape[0], cfg["trainer"]["batch_size"], cfg["seed"], True)
    model.train()
    marks: list[float] = []
    for s in range(steps):
        batch = ids[order.batch(s)]
        logits = model(batch[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        marks.append(time.perf_counter())
    return marks[-1] - marks[0], model.state_dict()


def digest(state: dict[str, Any]) -> str:
    from safetensors.torch import save

    return hashlib.sha256(save({k: state[k].contiguous().clone() for k in sorted(state)})).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config-name", default="train", help="train (the example) or smoke (CI size)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tiny-lm"
        shutil.copytree(EXAMPLE, root, ignore=lambda d, names: {
            n for n in names if Path(d) == EXAMPLE and n.split("-")[0] in ("data", "out")})
        bpe, enc, size = tokenize_stage(root, a.config_name, a.repeats)
        print(f"tokenize  BPE training {bpe:.2f} s, encoding {enc:.2f} s on {size / 1e6:.2f} MB (medians)")
        plain_t, repro_t = [], []
        for _ in range(a.repeats):  # interleaved so drift hits both alike
            t, repro_state, cfg = repro_loop(root, a.config_name, a.steps)
            repro_t.append(t)
            t, plain_state = plain_loop(root, cfg, a.steps)
            plain_t.append(t)
    tokens = (a.steps - 1) * cfg["trainer"]["batch_size"] * cfg["tokenize"]["block_size"]
    print(f"loop      {a.steps} steps x {cfg['trainer']['batch_size']} x {cfg['tokenize']['block_size']} tokens; "
          f"seconds per repeat: plain {[round(t, 2) for t in plain_t]}, repro {[round(t, 2) for t in repro_t]}")
    for name, pick in (("median", statistics.median), ("best", min)):
        p, r = tokens / pick(plain_t), tokens / pick(repro_t)
        print(f"{name:<9} plain {p:,.0f} tokens/s   repro {r:,.0f} tokens/s   time ratio repro/plain {p / r:.3f}x "
              "(goal <= 1.05x)")
    print(f"weights   plain loop and repro loop give identical bytes: {digest(plain_state) == digest(repro_state)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
