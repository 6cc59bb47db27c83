"""Which way of reading many small files hashes fastest here? The choices behind `repro.source.hashtree`.

    .venv/bin/python benchmarks/hash_reads.py            # the 10,000-file tree of hash_speed.py, best of 5

Issue 32 asked to measure `os.preadv`, larger buffers and batched `open`, and to
keep only what the numbers support. Everything runs in this process on the
`many` tree of `benchmarks/hash_speed.py` (1 GiB in 10,000 files, generated
there if missing), page cache warm, and is printed as a ratio to the first row
of its table, measured in the same run (higher is faster; best of --reps):

1. `hash_tree` as shipped against the same with other knobs: worker threads,
   files per pool task, the read buffer's size.
2. The bare read loop without repro around it, on the same number of threads:
   `preadv` vs `readv`; opening each file, reading it and closing it, vs
   opening a whole batch first ("batched open"); the buffer's size.

CPU seconds are shown beside wall seconds: on a shared machine they are the
steadier of the two. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hash_speed import generate  # noqa: E402

from repro.source import hashfile, hashtree  # noqa: E402
from repro.source.hashtree import hash_tree  # noqa: E402
from repro.source.walk import locate_patterns  # noqa: E402

OPEN_FILE = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW


def timed(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Best wall and best CPU seconds of `reps` runs."""
    walls, cpus = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def table(title: str, rows: list[tuple[str, Callable[[], object]]], reps: int) -> None:
    print(f"\n{title}\n  {'':<52} {'wall s':>7} {'cpu s':>7}  {'speed (wall)':>12} {'(cpu)':>6}")
    base: tuple[float, float] | None = None
    for name, fn in rows:
        wall, cpu = timed(fn, reps)
        base = base or (wall, cpu)
        print(f"  {name:<52} {wall:7.3f} {cpu:7.3f}  {base[0] / wall:12.2f} {base[1] / cpu:6.2f}", flush=True)


def shipped(root: Path, located: object, workers: int | None = None, batch: int | None = None,
            chunk: int | None = None) -> Callable[[], object]:
    def run() -> object:
        saved = hashtree.BATCH_FILES, hashfile.CHUNK
        hashtree.BATCH_FILES, hashfile.CHUNK = batch or saved[0], chunk or saved[1]
        hashfile._local = threading.local()  # a fresh buffer of the size asked for
        try:
            return hash_tree(root, located, workers)  # type: ignore[arg-type]
        finally:
            hashtree.BATCH_FILES, hashfile.CHUNK = saved
            hashfile._local = threading.local()
    return run


def bare(folders: list[tuple[str, list[str]]], threads: int, read: str, batched: bool, size: int
         ) -> Callable[[], object]:
    """Open, read into a reused buffer, sha256, fstat, close: every file, on `threads` threads, a folder's files
    in tasks of 64."""
    local = threading.local()

    def task(job: tuple[str, list[str]]) -> None:
        folder, names = job
        if not hasattr(local, "buf"):
            local.buf = bytearray(size)
            local.view = memoryview(local.buf)
        buf, view = local.buf, local.view
        dfd = os.open(folder, OPEN_DIR)
        try:
            fds = [os.open(n, OPEN_FILE, dir_fd=dfd) for n in names] if batched else None
            for k, name in enumerate(names):
                fd = fds[k] if fds is not None else os.open(name, OPEN_FILE, dir_fd=dfd)
                h, offset = hashlib.sha256(), 0
                while True:
                    n = os.preadv(fd, [buf], offset) if read == "preadv" else os.readv(fd, [buf])
                    h.update(view[:n])
                    offset += n
                    if n < size:
                        break
                h.digest()
                os.fstat(fd)
                os.close(fd)
        finally:
            os.close(dfd)

    jobs = [(folder, names[i : i + 64]) for folder, names in folders for i in range(0, len(names), 64)]

    def run() -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(task, jobs))
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/tmp") / "repro-bench-hash")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    data = generate(args.root, "many")
    located = locate_patterns(data, ["."])
    folders = [(str(data / d), sorted(os.listdir(data / d))) for d in sorted(os.listdir(data))]
    for folder, names in folders:  # into the page cache
        for n in names:
            with open(os.path.join(folder, n), "rb") as fh:
                fh.read()
    cores = len(os.sched_getaffinity(0))
    print(f"{len(located.paths):,} files; {cores} usable cores; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    dflt = hashtree.default_workers()
    table(f"1. hash_tree as shipped ({dflt} workers, {hashtree.BATCH_FILES} files a task, "
          f"{hashfile.CHUNK >> 10} KiB buffer) vs other knobs", [
              ("as shipped", shipped(data, located)),
              *[(f"{w} workers", shipped(data, located, workers=w)) for w in (1, 2, 4) if w != dflt],
              *[(f"{b} files a task", shipped(data, located, batch=b)) for b in (16, 256)],
              *[(f"{c >> 10} KiB buffer", shipped(data, located, chunk=c)) for c in (128 << 10, 256 << 10, 4 << 20)],
          ], args.reps)
    table(f"2. the bare read loop on {cores} threads (open, read, sha256, fstat, close)", [
        ("preadv, 1 MiB buffer, open-read-close", bare(folders, cores, "preadv", False, 1 << 20)),
        ("readv, 1 MiB buffer, open-read-close", bare(folders, cores, "readv", False, 1 << 20)),
        ("preadv, 1 MiB buffer, batched open (64 files)", bare(folders, cores, "preadv", True, 1 << 20)),
        ("preadv, 128 KiB buffer", bare(folders, cores, "preadv", False, 128 << 10)),
        ("preadv, 256 KiB buffer", bare(folders, cores, "preadv", False, 256 << 10)),
        ("preadv, 4 MiB buffer", bare(folders, cores, "preadv", False, 4 << 20)),
        (f"preadv, 1 MiB buffer, {cores + 1} threads", bare(folders, cores + 1, "preadv", False, 1 << 20)),
    ], args.reps)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
