"""Small models that ship with repro. Any importable `torch.nn.Module` works too."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """A plain multilayer perceptron: `depth` hidden ReLU layers of width `hidden`.

    `dropout > 0` adds a Dropout after each hidden layer. At 0 no module is added,
    so parameter names (and the weights of existing locks) stay as they were.
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, depth: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out
