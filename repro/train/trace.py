"""The loop's per-step hook, and the op recorder that replays steps under a `TorchDispatchMode`.

`StepTrace` keeps the per-step parameter digests (`repro.train.step_digests`)
and, when asked, records steps under `OpRecorder`: every aten operation's
outputs are digested (and kept, for counting differing elements), with the
module it ran in (forward hooks, and autograd nodes mapped back to the module
that made them) and its phase: forward, backward or optimizer.
`repro.train.opdiff` compares two recordings.

A replay is asked for through the environment, so the run under test keeps its
own command line, shell and CPU: `REPRO_TRACE_STEP=k` and `REPRO_TRACE_DIR=DIR`
(set by `repro check` and `repro verify --localize`, never in a published build).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from repro.canonical import atomic_write_json, sha256_bytes
from repro.errors import CheckpointError
from repro.filenames import OPS_NAME, VALUES_NAME
from repro.records import JsonObject
from repro.train.step_digests import StepDigests, tensor_bytes

if TYPE_CHECKING:
    from repro.train.checkpoint import Checkpoint

TRACE_STEP_ENV, TRACE_DIR_ENV = "REPRO_TRACE_STEP", "REPRO_TRACE_DIR"
VALUES_CAP = 256 * 2**20  # bytes of op outputs kept for element counts; digests are always kept
TRACE_VERSION = 1


class StepTrace:
    """A step observer (`repro.train.loop.Observer`): the parameter digests after every step, and the op
    recorder around the first steps.

    With `REPRO_TRACE_STEP=k`, steps 1..k run under one `OpRecorder` (entered for
    each step, so nothing between steps is recorded), saved after step k: a
    nondeterministic op can part two replays before k, and is then still named.
    """

    def __init__(self, model: nn.Module, optimizer: Any, done: list[str] | None = None) -> None:
        self.steps = StepDigests(model, done)
        self.model, self.optimizer = model, optimizer
        wanted = os.environ.get(TRACE_STEP_ENV)
        self.trace_step = int(wanted) if wanted and wanted.isdigit() else None
        self.recorder: OpRecorder | None = None

    @classmethod
    def start(cls, model: nn.Module, optimizer: Any, resume: Checkpoint | None) -> StepTrace:
        """A fresh trace, or one continuing the digests a checkpoint recorded."""
        done = None
        if resume is not None:
            done = resume.state.get("step_digests")
            if not isinstance(done, list) or len(done) != resume.step + 1:
                raise CheckpointError(f"{resume.path.name}: no parameter digest for each of its {resume.step} steps")
        return cls(model, getattr(optimizer, "optimizer", optimizer), [str(d) for d in done or []])

    @property
    def digests(self) -> list[str]:
        return self.steps.digests

    def before_step(self, step: int, rows: torch.Tensor | None = None) -> None:
        if self.trace_step is None or step > self.trace_step:
            return
        if self.recorder is None:
            self.recorder = OpRecorder(self.model, self.optimizer)
        self.recorder.step = step
        self.recorder.__enter__()  # type: ignore[no-untyped-call]  # torch's mode is untyped

    def after_step(self, step: int, loss: float | None = None) -> None:
        if self.recorder is not None:
            self.recorder.__exit__(None, None, None)  # type: ignore[no-untyped-call]
            if step == self.trace_step:
                self.recorder.close()
                self.recorder.save(Path(os.environ[TRACE_DIR_ENV]), step)
                self.recorder = None
        self.steps.record()


@dataclass
class Op:
    """One output of one aten call during the replayed step."""

    index: int
    step: int
    position: int  # within its step
    op: str
    phase: str
    module: str
    shape: list[int]
    dtype: str
    sha256: str
    kept: bool

    def to_json(self) -> JsonObject:
        return asdict(self)


class OpRecorder(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's mode is untyped
    """Digest every aten op's tensor outputs during one step, with module and phase."""

    def __init__(self, model: nn.Module, optimizer: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ops: list[Op] = []
        self.step = self.position = 0
        self.values: dict[str, torch.Tensor] = {}
        self.kept_bytes = 0
        self.stack: list[str] = []
        self.node_module: dict[Any, str] = {}
        self.in_optimizer = False
        self.names = {id(m): name or type(model).__name__ for name, m in model.named_modules()}
        self.param_names = {p: n for n, p in model.named_parameters()}
        self.optimizer = optimizer
        self.handles = [h for m in model.modules() for h in (
            m.register_forward_pre_hook(self._enter_module), m.register_forward_hook(self._leave_module))]
        self.handles += [optimizer.register_step_pre_hook(self._optimizer(True)),
                         optimizer.register_step_post_hook(self._optimizer(False))]

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def _enter_module(self, module: nn.Module, _args: Any) -> None:
        self.stack.append(self.names.get(id(module), type(module).__name__))

    def _leave_module(self, module: nn.Module, _args: Any, output: Any) -> None:
        path = self.stack.pop() if self.stack else ""
        # The autograd nodes this module made, not claimed by an inner module: their backward ran "in" it.
        todo: list[Any] = [t.grad_fn for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor) and t.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or node in self.node_module:
                continue
            self.node_module[node] = path
            todo += [nxt for nxt, _ in node.next_functions]

    def _optimizer(self, entering: bool) -> Any:
        def hook(*_args: Any) -> None:
            self.in_optimizer = entering
        return hook

    def _where(self, args: Any) -> tuple[str, str]:
        if self.in_optimizer:
            return "optimizer", self._param_of(args)
        node = torch._C._current_autograd_node()
        if node is not None:
            return "backward", self.node_module.get(node, "(outside the model)")
        return "forward", self.stack[-1] if self.stack else "(outside the model)"

    def _param_of(self, args: Any) -> str:
        """The parameter an optimizer op works on: the parameter itself or one of its state tensors."""
        ptrs = {t.data_ptr() for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)}
        for p, name in self.param_names.items():
            state = self.optimizer.state.get(p, {})
            owned = [p, p.grad, *(v for v in state.values() if isinstance(v, torch.Tensor))]
            if any(t is not None and t.data_ptr() in ptrs for t in owned):
                return name
        return "(optimizer)"

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        phase, module = self._where(args)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and not t.is_meta:
                self._record(f"{func._schema.name}.{func._overloadname}", phase, module, t)
        return out

    def _record(self, name: str, phase: str, module: str, t: torch.Tensor) -> None:
        index = len(self.ops)
        data = tensor_bytes(t)
        keep = self.kept_bytes + data.nbytes <= VALUES_CAP
        if keep:
            self.values[f"op{index}"] = t.detach().cpu().clone().contiguous()
            self.kept_bytes += data.nbytes
        self.position = self.position + 1 if self.ops and self.ops[-1].step == self.step else 0
        dtype = str(t.dtype).removeprefix("torch.")
        self.ops.append(Op(index, self.step, self.position, name, phase, module, list(t.shape), dtype,
                           sha256_bytes(data), keep))

    def save(self, folder: Path, step: int) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        if self.values:
            tmp = folder / f".{VALUES_NAME}.tmp"
            save_file(self.values, str(tmp))
            os.replace(tmp, folder / VALUES_NAME)
        atomic_write_json(folder / OPS_NAME, {"version": TRACE_VERSION, "step": step,
                                              "ops": [o.to_json() for o in self.ops]})


def read_trace(folder: Path) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """A recorded step: the ops' records and whatever values were kept."""
    from safetensors.torch import load_file

    ops = json.loads((folder / OPS_NAME).read_text(encoding="utf-8"))["ops"]
    values = load_file(str(folder / VALUES_NAME)) if (folder / VALUES_NAME).is_file() else {}
    return list(ops), values
