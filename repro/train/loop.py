"""The training loop. There is exactly one; pipelines, examples and verify call it.

Read it top to bottom: pins, seeds, data, model, then the steps. Everything that
can change the bits comes in through `cfg` and `pins` and is recorded by the
caller (`repro.build.run`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from repro.environment.pins import Pins
from repro.errors import ConfigError, TrainingFailed
from repro.source.base_model import with_base_path
from repro.source.config import TrainerSpec
from repro.source.data import DataSpec, load_splits
from repro.tasks import Batch, Task
from repro.train.determinism import apply_torch_pins, cuda_facts, seed_everything, seed_worker, torch_generator
from repro.train.sampling import OrderDigest, SampleOrder
from repro.train.state import Parts, capture, restore
from repro.train.trace import StepTrace

if TYPE_CHECKING:
    from repro.train.resume import Session

PRECISION_TO_ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class TrainResult:
    """What one run produced; `repro.build.run` turns it into files and the lock."""

    state: dict[str, torch.Tensor]
    losses: list[float]
    order_sha256: str
    order_count: int
    metrics: dict[str, float]
    flags: dict[str, Any]
    dataset_fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)
    step_digests: list[str] = field(default_factory=list)  # parameters after every step (repro.train.trace)
    samples: list[str] = field(default_factory=list)  # from the task's optional `samples` hook
    exports: dict[str, bytes] = field(default_factory=dict)  # from its optional `export` hook


class _Rows(Dataset[Batch]):
    """Index a dict of tensors by a whole batch of rows at once (no per-row collate)."""

    def __init__(self, tensors: Batch) -> None:
        self.tensors = tensors

    def __getitem__(self, rows: torch.Tensor) -> Batch:
        return {k: v[rows] for k, v in self.tensors.items()}


class _Steps(Sampler[torch.Tensor]):
    """Yield the global batch for each step in [start, stop)."""

    def __init__(self, order: SampleOrder, start: int, stop: int) -> None:
        self.order, self.start, self.stop = order, start, stop

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self.order.batch(s) for s in range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def _batches(
    tensors: Batch, order: SampleOrder, spec: TrainerSpec, seed: int, start: int = 0
) -> Iterator[tuple[torch.Tensor, Batch]]:
    """(rows, batch) for steps [start, max_steps). In memory, a gather per step; with
    workers, a DataLoader whose workers are seeded from our generator."""
    steps = _Steps(order, start, spec.max_steps)
    if spec.num_workers == 0:
        return ((rows, {k: v[rows] for k, v in tensors.items()}) for rows in steps)
    loader = DataLoader(_Rows(tensors), batch_size=None, sampler=steps, num_workers=spec.num_workers,
                        worker_init_fn=seed_worker, generator=torch_generator(seed))
    return zip(iter(steps), loader, strict=True)


def _accelerator(pins: Pins) -> Any:
    """accelerate's Accelerator, with a bounded wait on silent peers when distributed."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from repro.train.distributed import COLLECTIVE_TIMEOUT

    return Accelerator(cpu=pins.device == "cpu", mixed_precision=PRECISION_TO_ACCELERATE[pins.precision],
                       kwargs_handlers=[InitProcessGroupKwargs(timeout=COLLECTIVE_TIMEOUT)])


def instantiate(node: dict[str, Any], key: str) -> Any:
    """Build an object from a `_target_` config node, naming the key on failure."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(f"config key {key}: expected a mapping with _target_")
    try:
        return hydra_instantiate(node)
    except InstantiationException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config key {key}._target_ {node['_target_']!r}: {first}") from None


def train(
    cfg: dict[str, Any],
    pins: Pins,
    root: Path,
    data_files: list[str],
    on_step: Callable[[int, float], None] | None = None,
    checkpoints: Session | None = None,
    data_digest: str | None = None,
) -> TrainResult:
    """Train once from a resolved config under applied pins; return tensors and traces.

    With `checkpoints`, resume from `checkpoints.resume` if set and save after steps.
    """
    from accelerate.state import AcceleratorState

    flags = apply_torch_pins(pins)
    spec = TrainerSpec.from_config(cfg)
    task: Task = instantiate(cfg["task"], "task")
    train_rows, test_rows, fingerprint = load_splits(root, DataSpec.from_config(cfg), data_files, data_digest)
    train_t, test_t = task.tensors(train_rows), task.tensors(test_rows)
    n_train = next(iter(train_t.values())).shape[0]
    if spec.batch_size > n_train:
        raise ConfigError(f"config key trainer.batch_size: {spec.batch_size} exceeds the {n_train} training rows")

    # Seed after data loading so model init depends on the seed alone.
    flags["seeds"] = seed_everything(pins.seed)
    model = instantiate(with_base_path(cfg["model"], root), "model")  # a fine-tune loads its base
    optimizer = instantiate(cfg["trainer"]["optimizer"], "trainer.optimizer")(model.parameters())
    # Optional: a project's own trainer group may predate the key; absent means none.
    sched_node = cfg["trainer"].get("scheduler")
    scheduler = None if sched_node is None else instantiate(sched_node, "trainer.scheduler")(optimizer)

    accelerator = _accelerator(pins)
    try:
        rank, world = accelerator.process_index, accelerator.num_processes
        if world != pins.world_size:
            raise ConfigError(f"build.world_size is {pins.world_size} but {world} processes were launched")
        per_rank = spec.batch_size // world
        flags["distributed"] = {
            "backend": accelerator.state.backend if world > 1 else None,
            "batch_split": "contiguous",  # rank r takes rows [r*b, (r+1)*b) of every global batch
            "per_rank_batch": per_rank,
            "grad_accumulation": 1,
            "loss_reduction": "mean over ranks in rank order",
        }
        model, optimizer = accelerator.prepare(model, optimizer)
        order = SampleOrder(n_train, spec.batch_size, pins.seed, spec.shuffle)
        train_t = {k: v.to(accelerator.device) for k, v in train_t.items()}
        autocast = pins.precision != "fp32"
        # accelerate's optimizer wrapper probes for lomo_optim (importlib) and inspects
        # zero_grad's signature on every step: ~0.1 ms, 40% of a small model's step
        # here (benchmarks/train_overhead.py). Without a grad scaler it only forwards
        # to the wrapped optimizer, so call that directly; fp16 keeps accelerate's path.
        # accelerator.backward likewise only divides by the accumulation steps (1) and
        # calls loss.backward() unless there is a scaler.
        plain = getattr(optimizer, "scaler", None) is None
        inner = optimizer.optimizer if plain else optimizer
        step_fn, zero_fn = inner.step, inner.zero_grad
        backward = (lambda t: t.backward()) if plain else accelerator.backward
        resume = checkpoints.resume if checkpoints is not None else None
        start = resume.step if resume is not None else 0
        parts = Parts(accelerator.unwrap_model(model), optimizer, scheduler, accelerator.scaler)
        batches = _batches(train_t, order, spec, pins.seed, start)
        digest, losses = OrderDigest(), list[float]()
        if resume is not None:  # restores the RNGs last: nothing may draw before the next step
            digest, losses = restore(resume, parts, order)
        trace = StepTrace.start(parts.model, inner, resume)
        model.train()
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        for step, (rows, batch) in enumerate(batches, start):
            trace.before_step(step + 1)
            digest.update(rows)
            if world > 1:
                batch = {k: v[mine] for k, v in batch.items()}
            if autocast:
                with accelerator.autocast():
                    loss = task.loss(model, batch)
            else:
                loss = task.loss(model, batch)
            backward(loss)
            step_fn()
            if scheduler is not None:
                scheduler.step()
            zero_fn(set_to_none=True)
            trace.after_step(step + 1)
            # Every rank records the same number: the mean of all ranks' losses, in rank order.
            value = loss.item() if world == 1 else accelerator.gather(loss.detach().reshape(1)).mean().item()
            if not math.isfinite(value):
                raise TrainingFailed(f"loss became {value} at step {step + 1}; lower trainer.lr or check the data")
            losses.append(value)
            if checkpoints is not None:
                checkpoints.after_step(step + 1, partial(capture, step + 1, parts, order, losses, digest,
                                                                trace.digests))
            if on_step is not None:
                on_step(step + 1, value)

        net = accelerator.unwrap_model(model)
        net.eval()
        test = {k: v.to(accelerator.device) for k, v in test_t.items()}
        metrics = task.evaluate(net, test) if next(iter(test.values())).shape[0] else {}
        # Optional task hooks: text to record, files to put beside the weights.
        samples = task.samples(net, root) if hasattr(task, "samples") else []
        exports = task.export(net, root) if hasattr(task, "export") else {}
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        flags["cuda"] = cuda_facts()
    finally:
        AcceleratorState._reset_state(True)
    return TrainResult(state, losses, digest.hexdigest(), digest.count, metrics, flags, fingerprint,
                       step_digests=trace.digests, samples=samples, exports=exports)
