"""Where two runs part: a digest of the parameters after every step, and an op recorder.

Every run records `StepDigests`: before the first step and after each optimizer
step, one XXH3-128 digest over the bytes of every parameter, in
`named_parameters()` order. Hashing only reads the
tensors' memory; it draws no random number and changes no value, so the weights
are the same with or without it. The list goes beside the weights
(`step_digests.txt`) and its digest into the lock, so two runs' first differing
step can be named exactly, not rounded to the logging interval.

`OpRecorder` then replays one step under a `TorchDispatchMode`: every aten
operation's outputs are digested (and kept, for counting differing elements),
with the module it ran in (forward hooks, and autograd nodes mapped back to the
module that made them) and its phase: forward, backward or optimizer.

A replay is asked for through the environment, so the run under test keeps its
own command line, shell and CPU: `REPRO_TRACE_STEP=k` and `REPRO_TRACE_DIR=DIR`
(set by `repro check` and `repro verify --localize`, never in a published build).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import xxhash
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from repro.canonical import atomic_write_json
from repro.errors import CheckpointError

if TYPE_CHECKING:
    from repro.train.checkpoint import Checkpoint

TRACE_STEP_ENV, TRACE_DIR_ENV = "REPRO_TRACE_STEP", "REPRO_TRACE_DIR"
OPS_NAME, VALUES_NAME = "ops.json", "values.safetensors"
VALUES_CAP = 256 * 2**20  # bytes of op outputs kept for element counts; digests are always kept
TRACE_VERSION = 1


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of a tensor (a read, never a copy on CPU unless non-contiguous)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    flat = t.contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data


class StepDigests:
    """One digest over every parameter before the first step and after every step.

    `digests[0]` is the initial parameters, `digests[n]` those after step n. On
    resume the list comes from the checkpoint. The digest is XXH3-128: it only has
    to tell two honest runs apart, at about a microsecond per step (sha256 would
    cost the digits loop ~6%); the file of digests is sha256-hashed into the lock.
    CPU parameters are read through numpy views made once (optimizers update in
    place); a parameter whose storage moved gets a fresh view.
    """

    def __init__(self, model: nn.Module, done: list[str] | None = None) -> None:
        self.params = [p for _, p in model.named_parameters()]
        self.views: list[tuple[int, memoryview | None]] = [(-1, None)] * len(self.params)
        self.digests: list[str] = list(done or [])
        if not self.digests:
            self.record()

    def _view(self, i: int, p: torch.Tensor) -> memoryview:
        ptr, view = self.views[i]
        if view is not None and ptr == p.data_ptr():
            return view
        if p.device.type != "cpu" or not p.is_contiguous():
            return tensor_bytes(p)
        view = tensor_bytes(p)  # shares the parameter's memory: valid while its storage stays
        self.views[i] = (p.data_ptr(), view)
        return view

    def record(self) -> None:
        h = xxhash.xxh3_128()
        for i, p in enumerate(self.params):
            h.update(self._view(i, p))
        self.digests.append(h.hexdigest())


def step_digests_blob(digests: list[str]) -> bytes:
    """The file beside the weights: one hex digest per line; the first line is the initial
    parameters, line n + 1 the parameters after step n."""
    return "".join(d + "\n" for d in digests).encode("ascii")


class StepTrace:
    """The loop's one hook: `before_step(n)` and `after_step(n)` around every step.

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

    def before_step(self, step: int) -> None:
        if self.trace_step is None or step > self.trace_step:
            return
        if self.recorder is None:
            self.recorder = OpRecorder(self.model, self.optimizer)
        self.recorder.step = step
        self.recorder.__enter__()  # type: ignore[no-untyped-call]  # torch's mode is untyped

    def after_step(self, step: int) -> None:
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

    def to_json(self) -> dict[str, Any]:
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
                self._record(str(func.name()) + "." + func._overloadname, phase, module, t)
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
                           hashlib.sha256(data).hexdigest(), keep))

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


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """(elements that differ, the largest distance in units in the last place) of two float tensors."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return -1, -1
    differ = int((a.reshape(-1).view(torch.uint8).reshape(a.numel(), -1)
                  != b.reshape(-1).view(torch.uint8).reshape(b.numel(), -1)).any(dim=1).sum()) if a.numel() else 0
    ints = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
            torch.bfloat16: torch.int16}
    if a.dtype not in ints or not differ:
        return differ, 0

    def ordered(x: torch.Tensor) -> torch.Tensor:  # IEEE bits as a monotonic integer line
        i = x.contiguous().view(ints[x.dtype]).to(torch.int64)
        top = torch.iinfo(ints[x.dtype]).min
        return torch.where(i < 0, top - i, i)

    return differ, int((ordered(a) - ordered(b)).abs().max())


def first_difference(a: Path, b: Path) -> dict[str, Any] | None:
    """The first op whose outputs differ between two recorded runs, described; None if all agree.

    Only steps both recorded are compared (a resumed run records from its checkpoint on).
    """
    ops_a, vals_a = read_trace(a)
    ops_b, vals_b = read_trace(b)
    common = {o["step"] for o in ops_a} & {o["step"] for o in ops_b}
    for step in sorted(common):
        in_a = [o for o in ops_a if o["step"] == step]
        in_b = [o for o in ops_b if o["step"] == step]
        found = _first_in_step(in_a, in_b, vals_a, vals_b)
        if found is not None:
            return found
    return None


def _first_in_step(ops_a: list[dict[str, Any]], ops_b: list[dict[str, Any]], vals_a: dict[str, torch.Tensor],
                   vals_b: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    for x, y in zip(ops_a, ops_b, strict=False):
        where = {"step": x["step"], "position": x["position"], "op": x["op"], "phase": x["phase"],
                 "module": x["module"]}
        if x["op"] != y["op"] or x["shape"] != y["shape"]:
            return {**where, "other_op": y["op"], "shapes": [x["shape"], y["shape"]],
                    "kind": "the op sequences diverge"}
        if x["sha256"] != y["sha256"]:
            found = {**where, "shapes": [x["shape"]], "dtype": x["dtype"], "kind": "values differ",
                     "elements": _numel(x["shape"]), "differing": None, "max_ulp": None}
            ka, kb = f"op{x['index']}", f"op{y['index']}"
            if ka in vals_a and kb in vals_b:
                found["differing"], found["max_ulp"] = ulp_distance(vals_a[ka], vals_b[kb])
            return found
    if len(ops_a) != len(ops_b):
        return {"step": ops_a[0]["step"] if ops_a else None, "position": min(len(ops_a), len(ops_b)), "op": None,
                "phase": None, "module": None, "shapes": [],
                "kind": f"one run recorded {len(ops_a)} ops in the step, the other {len(ops_b)}"}
    return None


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def describe(diff: dict[str, Any]) -> str:
    """One line: `aten::sqrt.default in optimizer (net.0.weight), [64, 64]: 12 of 4096 differ, max 1 ulp`."""
    if diff["kind"] != "values differ":
        other = f" vs {diff['other_op']}" if diff.get("other_op") else ""
        return (f"step {diff['step']} op #{diff['position']} {diff['op']}{other} in {diff['phase']} "
                f"({diff['module']}): {diff['kind']}")
    counts = "" if diff["differing"] is None else \
        f": {diff['differing']} of {diff['elements']} elements differ, max {diff['max_ulp']} ulp"
    return (f"step {diff['step']} op #{diff['position']} {diff['op']} in {diff['phase']} ({diff['module']}), "
            f"shape {diff['shapes'][0]} {diff['dtype']}{counts}")


def iter_lines(path: Path) -> Iterator[str]:
    """The step digests of a `step_digests.txt`."""
    for line in path.read_text(encoding="ascii").splitlines():
        if line.strip():
            yield line.strip()
