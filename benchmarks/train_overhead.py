"""What does repro cost on top of a plain PyTorch loop? Ratios, measured in one run.

    .venv/bin/python benchmarks/train_overhead.py [--steps 3000] [--repeats 3]

Both loops train the same MLP on the same digits rows, in the same batch order
(repro.train.sampling.SampleOrder), for the same steps, with the same pins (2 threads,
ATEN_CPU_CAPABILITY=avx2, deterministic algorithms). Reported separately:
  * per-step loop time, repro / plain  (goal <= 1.05x)
  * fixed start-up: `repro train` process wall time minus its loop time, and the
    same for a plain script process
  * `repro --help` wall time (goal < 0.3 s; torch is imported lazily)
It also says whether the two loops produced the same weight bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["ATEN_CPU_CAPABILITY"] = "avx2"  # before torch loads, as repro does
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PLAIN = r'''
import os, sys, time
os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from repro.train.sampling import SampleOrder
steps = int(sys.argv[2])
t0 = time.perf_counter()
torch.set_num_threads(2); torch.use_deterministic_algorithms(True)
raw = np.loadtxt(sys.argv[3], delimiter=",", skiprows=1, dtype=np.float32)
x = torch.from_numpy(raw[:, :64] * np.float32(0.0625)); y = torch.from_numpy(raw[:, 64].astype(np.int64))
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=0.01)
order = SampleOrder(len(y), 64, 0, True)
t1 = time.perf_counter()
for s in range(steps):
    idx = order.batch(s)
    loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True); loss.item()
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
'''


def plain_loop(steps: int) -> tuple[float, dict]:
    """The hand-written loop, in-process, on the same rows repro trains on."""
    import torch

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)

    from repro.train.sampling import SampleOrder

    train_t = _repro_rows()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    order = SampleOrder(train_t["x"].shape[0], 64, 0, True)
    marks: list[float] = []
    for s in range(steps):
        idx = order.batch(s)
        loss = torch.nn.functional.cross_entropy(model(train_t["x"][idx]), train_t["y"][idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        marks.append(time.perf_counter())
    return marks[-1] - marks[0], {f"net.{k}": v for k, v in model.state_dict().items()}


def _repro_rows() -> dict:
    from repro.source.data import DataSpec, load_splits
    from repro.tasks import Classification

    cfg = _config(1)
    train_rows, _, _ = load_splits(REPO, DataSpec.from_config(cfg), ["repro/examples/digits/digits.csv"])
    return Classification(feature_scale=0.0625).tensors(train_rows)


def _config(steps: int) -> dict:
    from repro.source.compose import compose
    from repro.source.config import find_config

    source = find_config(None, "train", None, Path(tempfile.gettempdir()))
    return compose(source, [f"trainer.max_steps={steps}", "build.cpu_capability=avx2"])


def repro_loop(steps: int) -> tuple[float, dict]:
    """repro's own loop; time from the first step's end to the last step's end."""
    from repro.builder.spec import make_spec
    from repro.train.loop import train

    spec = make_spec(_config(steps), REPO, REPO / "out")
    marks: list[float] = []
    result = train(spec.recipe, on_step=lambda s, v: marks.append(time.perf_counter()))
    return marks[-1] - marks[0], result.state


def digest(state: dict) -> str:
    from safetensors.torch import save

    return hashlib.sha256(save({k: state[k].contiguous() for k in sorted(state)})).hexdigest()


def wall(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    plain_t, repro_t = [], []
    for _ in range(a.repeats):  # interleaved so drift hits both alike
        t, plain_state = plain_loop(a.steps)
        plain_t.append(t / (a.steps - 1) * 1e3)
        t, repro_state = repro_loop(a.steps)
        repro_t.append(t / (a.steps - 1) * 1e3)
    p, r = statistics.median(plain_t), statistics.median(repro_t)
    print(f"loop      plain {p:.4f} ms/step   repro {r:.4f} ms/step   ratio {r / p:.3f}x  (goal <= 1.05x)")
    same = digest(plain_state) == digest({k: v for k, v in repro_state.items()})
    print(f"weights   plain loop and repro loop give identical bytes: {same}")

    exe = Path(sys.executable).parent / "repro"
    with tempfile.TemporaryDirectory() as tmp:
        env_cmd = [str(exe), "train", "--quiet", "trainer.max_steps=300"]
        proc = [wall(env_cmd, Path(tmp)) for _ in range(a.repeats)]
        script = Path(tmp) / "plain.py"
        script.write_text(PLAIN)
        plain_proc = [wall([sys.executable, str(script), str(REPO), "300",
                            str(REPO / "repro/examples/digits/digits.csv")], Path(tmp)) for _ in range(a.repeats)]
        helps = [wall([str(exe), "--help"], Path(tmp)) for _ in range(5)]
    loop300 = r * 300 / 1e3
    print(f"process   repro train (300 steps) {statistics.median(proc):.2f} s wall; plain script "
          f"{statistics.median(plain_proc):.2f} s wall")
    print(f"startup   repro fixed cost ~ {statistics.median(proc) - loop300:.2f} s "
          f"(plain script ~ {statistics.median(plain_proc) - p * 300 / 1e3:.2f} s)")
    print(f"help      repro --help {statistics.median(helps) * 1e3:.0f} ms (goal < 300 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
