"""What repro.train.loop relies on in accelerate beyond its documented API: each test fails the day
accelerate changes it, before a build silently misbehaves."""

from __future__ import annotations

import subprocess
import sys

# In a fresh interpreter: accelerate's state is process-wide, and the rest of the suite must not see it.
RESET = """
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState

Accelerator(cpu=True, mixed_precision="no")
assert AcceleratorState._shared_state and PartialState._shared_state
# repro.train.loop.train ends every run with this private call: the next Accelerator in the process
# (a test, a benchmark, a second build) must be free to pick another precision.
AcceleratorState._reset_state(True)
assert not AcceleratorState._shared_state and not PartialState._shared_state
second = Accelerator(cpu=True, mixed_precision="bf16")
assert second.mixed_precision == "bf16", second.mixed_precision
AcceleratorState._reset_state(True)

# repro.train.loop._FastStep steps the wrapped torch optimizer itself when there is no grad scaler.
accelerator = Accelerator(cpu=True)
model = torch.nn.Linear(2, 1)
_, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
assert isinstance(optimizer.optimizer, torch.optim.SGD), type(optimizer.optimizer)
assert getattr(optimizer, "scaler", None) is None
print("ok")
"""


def test_the_private_reset_and_the_wrapped_optimizer_still_work_as_the_loop_assumes() -> None:
    done = subprocess.run([sys.executable, "-c", RESET], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
