"""Small models that ship with repro. Any importable `torch.nn.Module` works too."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """A plain multilayer perceptron: `depth` hidden ReLU layers of width `hidden`."""

    def __init__(self, in_features: int, hidden: int, out_features: int, depth: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
