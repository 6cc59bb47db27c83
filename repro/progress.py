"""Progress display: tqdm on stderr, silent when not on a TTY or with --quiet."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


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


BAR_DELAY_S = 1.0  # hashes quicker than this show no bar at all


class _ByteBar:
    """Bytes/s and files/s for hashing; shown only once a hash has taken over a second."""

    def __init__(self, desc: str) -> None:
        import threading

        self.desc = desc
        self.bar: Any = None
        self.files = 0
        self.lock = threading.Lock()

    def start(self, total_bytes: int, total_files: int) -> None:
        from tqdm import tqdm

        self.total_files = total_files
        self.started = self.shown = time.monotonic()
        self.bar = tqdm(total=total_bytes, desc=self.desc, unit="iB", unit_scale=True, unit_divisor=1024,
                        file=sys.stderr, dynamic_ncols=True, delay=BAR_DELAY_S, mininterval=0.2)

    def advance(self, nbytes: int, nfiles: int) -> None:
        with self.lock:  # called from the hashing threads
            self.bar.update(nbytes)
            self.files += nfiles
            now = time.monotonic()
            if now - self.shown >= 0.2 or self.files == self.total_files:
                self.shown = now
                rate = self.files / max(now - self.started, 1e-9)
                self.bar.set_postfix_str(f"{self.files}/{self.total_files} files, {rate:,.0f} files/s", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def byte_bar(quiet: bool, desc: str = "hash") -> Iterator[_ByteBar | None]:
    """A progress sink for `repro.source.hashing.hash_files`, or None when quiet or not on a TTY."""
    if not enabled(quiet):
        yield None
        return
    bar = _ByteBar(desc)
    try:
        yield bar
    finally:
        bar.close()


# One line per phase or build, for commands that run long without a per-step bar of their own
# (`repro check`, `repro verify`): `(line, done, total)`, where done/total count the phases.
PhaseReport = Callable[[str, int, int], None]


@contextmanager
def phase_lines(command: str, quiet: bool) -> Iterator[PhaseReport]:
    """Yield a reporter that prints `repro COMMAND: line` on stderr as each phase ends (nothing when quiet),
    and on a TTY also keeps a tqdm bar of the phases done, with the time taken so far."""
    if quiet:
        yield lambda line, done, total: None
        return
    bar: Any = None
    if enabled(quiet):
        from tqdm import tqdm

        bar = tqdm(total=0, desc=command, unit="phase", file=sys.stderr, dynamic_ncols=True, leave=False,
                   bar_format="{desc}: {n}/{total} {bar} {elapsed}")

    def report(line: str, done: int, total: int) -> None:
        text = f"repro {command}: {line}"
        if bar is None:
            print(text, file=sys.stderr, flush=True)
            return
        bar.total = total
        bar.update(done - bar.n)
        bar.write(text, file=sys.stderr)

    try:
        yield report
    finally:
        if bar is not None:
            bar.close()
