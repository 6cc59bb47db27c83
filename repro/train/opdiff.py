"""Compare two op recordings (`repro.train.trace`): the first op whose outputs differ, in words.

Only steps both recordings hold are compared (a resumed run records from its
checkpoint on), up to the step asked about (a build may have recorded all its
steps). A differing op is counted in elements and in units in the last place,
from the values the recorder kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from repro.train.trace import read_trace


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


def first_difference(a: Path, b: Path, upto: int | None = None) -> dict[str, Any] | None:
    """The first op whose outputs differ between two recorded runs, described; None if all agree.

    Only steps both recorded are compared (a resumed run records from its checkpoint on),
    and none after `upto`.
    """
    ops_a, vals_a = read_trace(a)
    ops_b, vals_b = read_trace(b)
    common = {o["step"] for o in ops_a} & {o["step"] for o in ops_b}
    if upto is not None:
        common = {s for s in common if s <= upto}
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
