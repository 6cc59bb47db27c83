"""Progress display: tqdm on stderr, silent when not on a TTY or with --quiet."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, Iterator


def enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@contextmanager
def step_bar(total: int, quiet: bool, desc: str = "train") -> Iterator[Callable[[int, float], None]]:
    """Yield a callback `(step, loss)` that advances a bar showing step, loss and ETA."""
    if not enabled(quiet):
        yield lambda step, loss: None
        return
    from tqdm import tqdm

    bar: Any = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)

    def update(step: int, loss: float) -> None:
        bar.update(step - bar.n)
        if step % 10 == 0 or step == total:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    try:
        yield update
    finally:
        bar.close()


@contextmanager
def bytes_bar(total: int, quiet: bool, desc: str = "hash") -> Iterator[Callable[[int], None]]:
    """Yield a callback `(nbytes)` advancing a byte-count bar (hashing progress)."""
    if not enabled(quiet) or total <= 0:
        yield lambda n: None
        return
    import threading

    from tqdm import tqdm

    bar: Any = tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, dynamic_ncols=True)
    lock = threading.Lock()  # hash_files calls back from its worker threads

    def update(n: int) -> None:
        with lock:
            bar.update(n)

    try:
        yield update
    finally:
        bar.close()
