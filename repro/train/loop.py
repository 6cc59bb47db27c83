"""The training loop. There is exactly one; pipelines, examples and verify call it.

Read `train` top to bottom: pins, seeds, data, model, then the steps, then the
held-out evaluation. Everything that can change the bits comes in through the
build's typed `Recipe` (`repro.train.recipe`, held by a `BuildSpec`) and is recorded by the
caller (`repro.builder.build`).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from repro import lifetime
from repro.environment.pins import Pins
from repro.errors import ConfigError, TrainingFailed
from repro.lock.types import CpuFacts, CudaFacts
from repro.source.base_model import with_base_path
from repro.source.config import TrainerSpec, one_line
from repro.source.data import load_splits
from repro.tasks import Batch, Task, as_task
from repro.train.determinism import (
    apply_torch_pins,
    cpu_facts,
    cuda_facts,
    seed_everything,
    seed_worker,
    torch_generator,
)
from repro.train.recipe import Recipe
from repro.train.sampling import OrderDigest, SampleOrder
from repro.train.state import Parts, capture, restore
from repro.train.trace import StepTrace

if TYPE_CHECKING:
    from repro.train.resume import Session

PRECISION_TO_ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
OnStep = Callable[[int, float], None]


@dataclass(frozen=True)
class RunFlags:
    """What the loop set in torch and found about the run, for the lock's build section."""

    torch: dict[str, Any]  # what apply_torch_pins set
    seeds: dict[str, int]
    distributed: dict[str, Any]
    cuda: CudaFacts | None  # the lock's build.cuda (None on CPU)
    cpu: CpuFacts | None = None  # the lock's build.cpu: a native CPU build's CPU (else None)

    def to_json(self) -> dict[str, Any]:
        """The lock's `build.flags`."""
        return {**self.torch, "seeds": self.seeds, "distributed": self.distributed}


@dataclass(frozen=True)
class TrainResult:
    """What one run produced; `repro.builder.build` turns it into files and the lock."""

    state: dict[str, torch.Tensor]
    losses: list[float]
    order_sha256: str
    order_count: int
    metrics: dict[str, float]
    flags: RunFlags
    dataset_fingerprint: str
    step_digests: list[str] = field(default_factory=list)  # parameters after every step (repro.train.step_digests)
    samples: list[str] = field(default_factory=list)  # from the task's `samples` hook
    exports: dict[str, bytes] = field(default_factory=dict)  # from its `export` hook


def train(recipe: Recipe, on_step: OnStep | None = None, checkpoints: Session | None = None,
          data_digest: str | None = None) -> TrainResult:
    """Train once under applied pins; return tensors and traces.

    With `checkpoints`, resume from `checkpoints.resume` if set and save after steps.
    """
    from accelerate.state import AcceleratorState

    pins, spec, nodes = recipe.pins, recipe.trainer, recipe.components
    torch_flags = apply_torch_pins(pins)
    task = as_task(instantiate(nodes.task, "task"))
    train_t, test_t, fingerprint = _load_data(recipe, task, data_digest)
    # Seed after data loading so model init depends on the seed alone.
    seeds = seed_everything(pins.seed)
    model = instantiate(with_base_path(nodes.model, recipe.root), "model")  # a fine-tune loads its base
    optimizer = called(instantiate(nodes.optimizer, "trainer.optimizer"), "trainer.optimizer", model.parameters())
    scheduler = None if nodes.scheduler is None else called(instantiate(nodes.scheduler, "trainer.scheduler"),
                                                            "trainer.scheduler", optimizer)

    accelerator = _accelerator(pins)
    if not gc.isenabled():  # a build child, whose imports are done (repro.builder.__main__)
        gc.freeze()  # what start-up loaded stays: never scan it again
        gc.enable()
    try:
        run = _Run.prepare(accelerator, pins, spec, task, model, optimizer, scheduler, train_t)
        losses, digest, trace = run.steps(checkpoints, on_step)
        net = accelerator.unwrap_model(run.model)
        metrics, samples, exports = evaluate(task, net, test_t, recipe.root, accelerator.device)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        flags = RunFlags({**torch_flags, **_unportable(pins)}, seeds, run.distributed(), cuda_facts(), cpu_facts(pins))
    finally:
        # accelerate keeps its state in class-level singletons; the next Accelerator in this process
        # (tests, benchmarks) must start clean. A private call: tests/test_loop.py fails if it changes.
        AcceleratorState._reset_state(True)
    return TrainResult(state, losses, digest.hexdigest(), digest.count, metrics, flags, fingerprint,
                       step_digests=trace.digests, samples=samples, exports=exports)


def _unportable(pins: Pins) -> dict[str, list[str]]:
    """The unportable operators this run made under `build.unportable: record` (the lock's warning)."""
    if pins.kernels != "portable":
        return {}
    from repro.train.kernels import unportable_seen

    return {"unportable": unportable_seen()}


def _load_data(recipe: Recipe, task: Task, data_digest: str | None) -> tuple[Batch, Batch, str]:
    """The train and test splits as the task's tensors, and the datasets fingerprint."""
    train_rows, test_rows, fingerprint = load_splits(recipe.root, recipe.data, recipe.files.trained, data_digest)
    train_t, test_t = task.tensors(train_rows), task.tensors(test_rows)
    n_train = next(iter(train_t.values())).shape[0]
    if recipe.trainer.batch_size > n_train:
        raise ConfigError(f"config key trainer.batch_size: {recipe.trainer.batch_size} exceeds the {n_train} "
                          "training rows")
    return train_t, test_t, fingerprint


def evaluate(task: Task, net: torch.nn.Module, test_t: Batch, root: Path,
             device: torch.device) -> tuple[dict[str, float], list[str], dict[str, bytes]]:
    """Held-out metrics (none without test rows), then the task's samples and exported files."""
    net.eval()
    test = {k: v.to(device) for k, v in test_t.items()}
    metrics = task.evaluate(net, test) if next(iter(test.values())).shape[0] else {}
    return metrics, task.samples(net, root), task.export(net, root)


class _FastStep:
    """accelerate's optimizer step and backward, minus a per-step cost that changes no bit.

    accelerate's optimizer wrapper probes for lomo_optim (importlib) and inspects
    zero_grad's signature on every step: ~0.1 ms, 40% of a small model's step
    here (benchmarks/train_overhead.py). Without a grad scaler it only forwards to
    the wrapped optimizer, so call that directly; fp16 keeps accelerate's path.
    accelerator.backward likewise only divides by the accumulation steps (1) and
    calls loss.backward() unless there is a scaler.
    """

    def __init__(self, accelerator: Any, optimizer: Any) -> None:
        plain = getattr(optimizer, "scaler", None) is None
        self.inner = optimizer.optimizer if plain else optimizer
        self.step, self.zero_grad = self.inner.step, self.inner.zero_grad
        self.backward: Callable[[torch.Tensor], None] = _backward if plain else accelerator.backward


def _backward(loss: torch.Tensor) -> None:
    loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward untyped


@dataclass
class _Run:
    """One run's prepared pieces; `steps` is the loop itself."""

    accelerator: Any
    pins: Pins
    spec: TrainerSpec
    task: Task
    model: Any
    scheduler: Any
    parts: Parts
    order: SampleOrder
    train_t: Batch
    fast: _FastStep
    rank: int
    world: int

    @classmethod
    def prepare(cls, accelerator: Any, pins: Pins, spec: TrainerSpec, task: Task, model: Any, optimizer: Any,
                scheduler: Any, train_t: Batch) -> _Run:
        rank, world = accelerator.process_index, accelerator.num_processes
        if world != pins.world_size:
            raise ConfigError(f"build.world_size is {pins.world_size} but {world} processes were launched")
        model, optimizer = accelerator.prepare(model, optimizer)
        n_train = next(iter(train_t.values())).shape[0]
        order = SampleOrder(n_train, spec.batch_size, pins.seed, spec.shuffle)
        train_t = {k: v.to(accelerator.device) for k, v in train_t.items()}
        parts = Parts(accelerator.unwrap_model(model), optimizer, scheduler, accelerator.scaler)
        return cls(accelerator, pins, spec, task, model, scheduler, parts, order, train_t,
                   _FastStep(accelerator, optimizer), rank, world)

    def distributed(self) -> dict[str, Any]:
        """How the global batch was split and the loss reduced, for the lock's flags."""
        return {
            "backend": self.accelerator.state.backend if self.world > 1 else None,
            "batch_split": "contiguous",  # rank r takes rows [r*b, (r+1)*b) of every global batch
            "per_rank_batch": self.spec.batch_size // self.world,
            "grad_accumulation": 1,
            "loss_reduction": "mean over ranks in rank order",
        }

    def steps(self, checkpoints: Session | None,
              on_step: OnStep | None) -> tuple[list[float], OrderDigest, StepTrace]:
        """Train from step 0 or the checkpoint's step to max_steps; return the losses, order digest and trace.

        The step itself is `step`; everything kept about it (sample order, parameter
        digests, checkpoints, progress) is an observer called before and after it.
        A stop signal (repro.lifetime) ends the steps after the one it came in, with a checkpoint.
        """
        # The model is built and its imports are known: the checkpoint must be of this very source.
        resume = checkpoints.begin() if checkpoints is not None else None
        start = resume.step if resume is not None else 0
        batches = _batches(self.train_t, self.order, self.spec, self.pins.seed, start)
        record = _Record()
        if resume is not None:  # restores the RNGs last: nothing may draw before the next step
            record.digest, record.losses = restore(resume, self.parts, self.order)
        trace = StepTrace.start(self.parts.model, self.fast.inner, resume)
        observers: list[Observer] = [trace, record]  # the trace first: it records the step's ops, nothing else
        if checkpoints is not None:
            observers.append(_Saver(checkpoints, self.parts, self.order, record, trace))
        if on_step is not None:
            observers.append(_Progress(on_step))
        self.model.train()
        with lifetime.deferred():  # a stop signal waits for the end of its step
            for step, (rows, batch) in enumerate(batches, start):
                for observer in observers:
                    observer.before_step(step + 1, rows)
                value = self.step(step, batch)
                for observer in observers:
                    observer.after_step(step + 1, value)
                lifetime.raise_if_stopped(f" after step {step + 1}")
        return record.losses, record.digest, trace

    def step(self, step: int, batch: Batch) -> float:
        """One optimizer step on this rank's slice of the global batch; the loss every rank agrees on."""
        if self.world > 1:
            per_rank = self.spec.batch_size // self.world
            batch = {k: v[self.rank * per_rank:(self.rank + 1) * per_rank] for k, v in batch.items()}
        if self.pins.precision != "fp32":
            with self.accelerator.autocast():
                loss = self.task.loss(self.model, batch)
        else:
            loss = self.task.loss(self.model, batch)
        self.fast.backward(loss)
        self.fast.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.fast.zero_grad(set_to_none=True)  # flush the gradients as soon as we can
        # Every rank records the same number: the mean of all ranks' losses, in rank order.
        world_loss = loss if self.world == 1 else self.accelerator.gather(loss.detach().reshape(1)).mean()
        value = float(world_loss.item())
        if not math.isfinite(value):
            raise TrainingFailed(f"loss became {value} at step {step + 1}; lower trainer.lr or check the data")
        return value


class Observer(Protocol):
    """Bookkeeping around a step, kept out of the step: `before_step(n, rows)` and `after_step(n, loss)`."""

    def before_step(self, step: int, rows: torch.Tensor) -> None: ...
    def after_step(self, step: int, loss: float) -> None: ...


@dataclass
class _Record:
    """The lock's sample order digest and loss trajectory."""

    digest: OrderDigest = field(default_factory=OrderDigest)
    losses: list[float] = field(default_factory=list)

    def before_step(self, step: int, rows: torch.Tensor) -> None:
        self.digest.update(rows)

    def after_step(self, step: int, loss: float) -> None:
        self.losses.append(loss)


@dataclass
class _Saver:
    """Checkpoints when due, and the stop after a signal (`Session.after_step`)."""

    session: Session
    parts: Parts
    order: SampleOrder
    record: _Record
    trace: StepTrace

    def before_step(self, step: int, rows: torch.Tensor) -> None:
        pass

    def after_step(self, step: int, loss: float) -> None:
        self.session.after_step(step, partial(capture, step, self.parts, self.order, self.record.losses,
                                              self.record.digest, self.trace.digests))


@dataclass
class _Progress:
    """The caller's progress callback (a bar on stderr)."""

    on_step: OnStep

    def before_step(self, step: int, rows: torch.Tensor) -> None:
        pass

    def after_step(self, step: int, loss: float) -> None:
        self.on_step(step, loss)


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


def called(partial_: Any, key: str, arg: Any) -> Any:
    """Call a `_partial_` node (an optimizer on the parameters); a value it refuses is a config error (exit 2)."""
    try:
        return partial_(arg)
    except (ValueError, TypeError) as exc:  # torch.optim: "Invalid learning rate: -1"
        func = getattr(partial_, "func", partial_)
        name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', func)}".lstrip(".")
        raise ConfigError(f"config key {key}: {name} refused its arguments: {one_line(exc)}") from None


def instantiate(node: dict[str, Any], key: str) -> Any:
    """Build an object from a `_target_` config node (checked as one by `Components`), naming the key on failure."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node)
    except InstantiationException as exc:
        raise ConfigError(f"config key {key}._target_ {node['_target_']!r}: {one_line(exc)}") from None
