"""Test-only pauses, installed in `repro train` processes that tests start (never in repro itself).

Python imports `sitecustomize` at start-up from PYTHONPATH, so a test that puts
this folder there (conftest.HOOKS_DIR) reaches the CLI process; the CLI's build
children and torchrun's ranks get it too, because the hook adds this folder to
the PYTHONPATH of the environment `repro.build.child` makes for them. With PAUSE_STEP_ENV=N the
loop stops after step N; with PAUSE_CHECKPOINT_ENV=N the checkpoint writer stops
after the first file of step N. Each touches `<checkpoints>/.paused-<ENV>-<N>`
and waits until the test deletes it (or kills the process there).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

PAUSE_STEP_ENV = "REPRO_TEST_PAUSE_STEP"
PAUSE_CHECKPOINT_ENV = "REPRO_TEST_PAUSE_CHECKPOINT"


def _pause(env: str, step: int, root: Path) -> None:
    if os.environ.get(env) != str(step) or os.environ.get("RANK", "0") != "0":  # rank 0 alone pauses
        return
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".paused-{env}-{step}"
    marker.touch()
    deadline = time.monotonic() + 600
    while marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def _install() -> None:
    from repro.build import child
    from repro.train import checkpoint, resume

    environ = child.child_environ

    def environ_with_hooks(*args: Any, **kwargs: Any) -> dict[str, str]:
        env = environ(*args, **kwargs)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(Path(__file__).parent)]))
        return env

    child.child_environ = environ_with_hooks

    after_step, write = resume.Session.after_step, checkpoint.write

    def paused_after_step(self: resume.Session, step: int, capture: Any) -> None:
        after_step(self, step, capture)
        _pause(PAUSE_STEP_ENV, step, self.root)

    def paused_write(root: Path, step: int, writers: dict[str, checkpoint.Writer]) -> Path:
        first = next(iter(writers))
        inner = writers[first]

        def first_then_pause(path: Path) -> None:
            inner(path)
            _pause(PAUSE_CHECKPOINT_ENV, step, root)

        return write(root, step, {**writers, first: first_then_pause})

    resume.Session.after_step = paused_after_step  # type: ignore[method-assign]
    checkpoint.write = paused_write


if os.environ.get(PAUSE_STEP_ENV) or os.environ.get(PAUSE_CHECKPOINT_ENV):
    _install()
