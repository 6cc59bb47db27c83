"""A test plugin: pause a real build in the middle of writing a checkpoint, so a test can SIGKILL it there.

A test project copies this file to its root and names `pause_checkpoint_plugin.MLP`
(repro's own MLP) as its model, so the build child imports it: the project root
is first on a build's import path. With `REPRO_TEST_PAUSE_CHECKPOINT=N` in the
environment (the REPRO_ prefix passes the child's allowlist) the write of
checkpoint N stops after its first file, `optimizer.safetensors`, touches
`checkpoints/.paused-writing-N` and waits until the test deletes it. Without
the variable it changes nothing, and importing it in the test process is harmless.
"""

from __future__ import annotations

import os
from pathlib import Path

from repro.models import MLP
from repro.train import checkpoint
from repro.train.resume import wait_while_present

__all__ = ["MLP", "PAUSE_CHECKPOINT_ENV", "marker"]

PAUSE_CHECKPOINT_ENV = "REPRO_TEST_PAUSE_CHECKPOINT"


def marker(checkpoints: Path, step: int) -> Path:
    return checkpoints / f".paused-writing-{step}"


def _install() -> None:
    write = checkpoint.write

    def pausing_write(root: Path, step: int, writers: dict[str, checkpoint.Writer]) -> Path:
        if os.environ.get(PAUSE_CHECKPOINT_ENV) != str(step):
            return write(root, step, writers)
        first = next(iter(writers))

        def then_pause(path: Path, inner: checkpoint.Writer = writers[first]) -> None:
            inner(path)
            wait_while_present(marker(root, step))

        return write(root, step, {**writers, first: then_pause})

    checkpoint.write = pausing_write


if os.environ.get(PAUSE_CHECKPOINT_ENV):
    _install()
