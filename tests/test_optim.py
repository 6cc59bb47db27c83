"""PortableAdam: Adam's update with a square root built from IEEE basic operations."""

from __future__ import annotations

import math

import numpy as np
import torch

from repro.optim import PortableAdam, portable_sqrt


def test_portable_sqrt_is_within_one_ulp_of_ieee_sqrt() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(50_000, generator=g) * 10, torch.rand(1000, generator=g) * 1e-30,
                   torch.tensor([0.0, 1.0, 4.0, 1e30, 3.4e38])])
    exact = np.array([np.float32(math.sqrt(float(v))) for v in x.numpy()], dtype=np.float32)
    got = portable_sqrt(x).numpy()
    ulps = np.abs(got.view(np.int32).astype(np.int64) - exact.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1
    assert got[-5] == 0.0 and got[-3] == 2.0


def test_portable_adam_follows_torch_adam() -> None:
    """Same algorithm: within float rounding of torch's Adam after 50 steps."""
    torch.manual_seed(0)
    ref = torch.nn.Linear(8, 3)
    mine = torch.nn.Linear(8, 3)
    mine.load_state_dict(ref.state_dict())
    opt_ref = torch.optim.Adam(ref.parameters(), lr=0.01, foreach=False)
    opt_mine = PortableAdam(mine.parameters(), lr=0.01)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(50):
        for model, opt in ((ref, opt_ref), (mine, opt_mine)):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(ref.parameters(), mine.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert not torch.equal(ref.weight, torch.nn.Linear(8, 3).weight)
