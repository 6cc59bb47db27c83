"""What checkpointing costs, as ratios against a baseline measured in the same run.

    .venv/bin/python benchmarks/checkpoint_cost.py            # about 2 minutes, ~4 GiB of RAM and /tmp
    .venv/bin/python benchmarks/checkpoint_cost.py --quick    # smaller model, fewer repeats

1. Training: `repro train` (in-process `make_spec` and `launch`) on the digits example with a
   wider MLP, with checkpoints every N steps against none. Times are whole
   builds (hashing, data, training, outputs), medians of alternating repeats.
2. Writing one checkpoint of a generated 100M-parameter model with its Adam
   state: repro's checkpoint (safetensors + JSON, sha256 manifest, fsyncs,
   atomic rename) against `torch.save` of the same state (a pickle, written here
   only to measure it), with and without an fsync. Also reading it back:
   repro's verify + restore against `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEPS = 400
TRAIN_OVERRIDES = [f"trainer.max_steps={STEPS}", "model.hidden=512", "model.depth=2", "trainer.log_every=50"]


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_training(tmp: Path, everies: list[int], repeats: int) -> None:
    """Whole-build time with checkpoints every N steps, against N=0 (none)."""
    from repro.builder.launch import launch
    from repro.builder.spec import make_spec
    from repro.source.compose import compose
    from repro.source.config import find_config

    source = find_config(None, "train", None, tmp)  # tmp has no configs/: the embedded example

    def build(every: int) -> float:
        cfg = compose(source, [*TRAIN_OVERRIDES, f"trainer.checkpoint_every={every}"])
        out = tmp / f"train-{every}"
        report = launch(make_spec(cfg, source.root, out))
        shutil.rmtree(out)
        assert report is not None
        return report.seconds

    build(0)  # warm-up: imports, dataset cache
    runs: dict[int, list[float]] = {e: [] for e in [0, *everies]}
    for _ in range(repeats):  # alternate, so load from other processes hits all alike
        for every in runs:
            runs[every].append(build(every))
    base = statistics.median(runs[0])
    one = _one_small_checkpoint(tmp)
    print(f"training: {' '.join(TRAIN_OVERRIDES)}; median of {repeats} whole builds")
    print(f"  no checkpoints          {base:7.2f} s   1.00x")
    for every in everies:
        t = statistics.median(runs[every])
        n = STEPS // every
        print(f"  every {every:4d} steps ({n:3d}) {t:7.2f} s   {t / base:.2f}x   "
              f"(one checkpoint timed alone: {one * 1000:.0f} ms, x{n} = {1 + n * one / base:.2f}x)")


def _one_small_checkpoint(tmp: Path, repeats: int = 20) -> float:
    """Median time of capture + write for the training model above, outside the build."""
    import torch

    from repro.canonical import canonical_json
    from repro.models import MLP
    from repro.train import checkpoint
    from repro.train.sampling import OrderDigest, SampleOrder
    from repro.train.state import Parts, capture

    model = MLP(64, 512, 10, depth=2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(8, 64)).sum().backward()
    opt.step()
    order, digest, root = SampleOrder(1437, 64, 0, True), OrderDigest(), tmp / "small"
    record = {"inputs": {}, "build": {}, "resumes": []}

    def once() -> None:
        writers, state = capture(STEPS, Parts(model, opt, None, None), order, [0.5] * STEPS, digest, [])
        writers[checkpoint.STATE_NAME] = checkpoint.bytes_writer(canonical_json({**state, **record}))
        checkpoint.write(root, STEPS, writers)
        shutil.rmtree(root)

    return median_time(once, repeats)


def bench_large(tmp: Path, width: int, layers: int, repeats: int) -> None:
    import torch
    from torch import nn

    from repro.canonical import canonical_json
    from repro.train import checkpoint
    from repro.train.sampling import OrderDigest, SampleOrder
    from repro.train.state import Parts, capture, restore

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()  # creates exp_avg and exp_avg_sq: the state is 3x the parameters
    parts, order = Parts(model, opt, None, None), SampleOrder(1000, 10, 0, True)
    record = {"inputs": {"config": {"resolved": {}, "sha256": "0" * 64}, "data": {"files": [], "root_digest": ""},
                         "code": {"files": [], "root_digest": "", "repro": {}}},
              "build": {"packages": {}}, "resumes": []}
    root, pt = tmp / "checkpoints", tmp / "state.pt"

    def repro_write() -> None:
        digest = OrderDigest()
        digest.update(order.batch(0))
        writers, state = capture(1, parts, order, [0.0], digest, [])
        state.update(record)
        writers[checkpoint.STATE_NAME] = checkpoint.bytes_writer(canonical_json(state))
        checkpoint.write(root, 1, writers)

    def torch_save(fsync: bool) -> None:
        with open(pt, "wb") as fh:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())

    def repro_read() -> None:
        ckpt = checkpoint.read(root / checkpoint.dir_name(1))
        restore(ckpt, parts, order)

    def torch_read() -> None:
        state = torch.load(pt, weights_only=True)  # benchmark only: repro never loads pickles
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])

    cases = {"save": lambda: torch_save(False), "save_sync": lambda: torch_save(True), "repro": repro_write,
             "load": torch_read, "read": repro_read}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):  # alternate; flush dirty pages first so no case pays for the one before
        for name, fn in cases.items():
            if name == "repro":  # the same step again: clear it outside the timed region
                shutil.rmtree(root, ignore_errors=True)
            os.sync()
            times[name].append(median_time(fn, 1))
    t_save, t_save_sync, t_repro, t_load, t_read = (statistics.median(times[k]) for k in cases)
    size = sum(p.stat().st_size for p in (root / checkpoint.dir_name(1)).iterdir())
    print(f"one checkpoint: {params / 1e6:.1f}M parameters + Adam state, {size / 2**30:.2f} GiB; median of {repeats}")
    print(f"  torch.save (no fsync)          {t_save:6.2f} s   1.00x")
    print(f"  torch.save + fsync             {t_save_sync:6.2f} s   {t_save_sync / t_save:.2f}x")
    print(f"  repro checkpoint write         {t_repro:6.2f} s   {t_repro / t_save:.2f}x   "
          f"({t_repro / t_save_sync:.2f}x of torch.save + fsync)")
    print(f"  torch.load(weights_only) + load_state_dict {t_load:6.2f} s   1.00x")
    print(f"  repro verify + restore                     {t_read:6.2f} s   {t_read / t_load:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 25M-parameter model and 1 repeat")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="repro-bench-ckpt-", dir="/tmp") as d:
        tmp = Path(d)
        os.chdir(tmp)
        bench_training(tmp, [10, 100], repeats=1 if args.quick else 3)
        if args.quick:
            bench_large(tmp, width=2048, layers=6, repeats=1)
        else:
            bench_large(tmp, width=4096, layers=6, repeats=3)  # 6 x (4096^2 + 4096) = 100.7M


if __name__ == "__main__":
    main()
