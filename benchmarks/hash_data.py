"""How fast does repro hash data, against sha256sum and `dvc add`, measured in the same run?

    .venv/bin/python benchmarks/hash_data.py                 # both shapes, best of 3
    .venv/bin/python benchmarks/hash_data.py --shapes many --reps 5 --profile

Generates two shapes under --root (default /tmp/repro-bench-hash): 1 GiB as
10,000 files in 100 folders, and 1 GiB as one file. For each it times, as
child processes with the data in the page cache:

- `repro hash` cold: a fresh, empty stat cache, so every byte is read;
- `repro hash` warm: the same cache again, every file unchanged;
- `sha256sum` over all files, one process;
- `dvc add` on a fresh copy in a fresh git+dvc repo (default settings, so it
  also copies the data into .dvc/cache; `--no-commit` timed too).

It prints best and median wall time, GiB/s, CPU seconds, peak RSS (from
wait4 on each child) and ratios, plus this CPU's single-core hashlib sha256
speed as the ceiling. --profile adds cProfile tops of in-process cold and
warm runs. Other processes on the machine skew wall times; load averages are
printed before and after.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GIB = 1 << 30
SHAPES = {"many": (10_000, GIB // 10_000), "one": (1, GIB)}
ENV = {**os.environ, "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1", "HF_DATASETS_OFFLINE": "1"}


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mb: float


# A one-child wrapper: RUSAGE_CHILDREN of it is the command's own peak RSS and CPU time,
# free of the benchmark process's memory (a vforked child would report that instead).
WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(u.ru_maxrss, u.ru_utime + u.ru_stime, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def child(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Run:
    """Run one command; its wall time, CPU time and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], cwd=cwd, env=env or ENV, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{proc.stderr}")
    rss_kb, cpu = proc.stderr.strip().splitlines()[-1].split()
    return Run(wall, float(cpu), int(rss_kb) / 1024)


def generate(root: Path, shape: str) -> Path:
    """The data for one shape, made once and reused while its marker file matches."""
    count, size = SHAPES[shape]
    data = root / shape / "data"
    marker = root / shape / f"generated-{count}x{size}"
    if marker.exists():
        return data
    shutil.rmtree(root / shape, ignore_errors=True)
    data.mkdir(parents=True)
    block = os.urandom(1 << 20)
    for i in range(count):
        folder = data / f"d{i // 100:03d}" if count > 1 else data
        folder.mkdir(exist_ok=True)
        with open(folder / f"f{i:05d}.bin", "wb") as fh:
            left = size
            while left:
                n = min(left, len(block))
                fh.write(block[:n] if count > 1 else os.urandom(n))
                left -= n
            fh.write(i.to_bytes(8, "little") if count > 1 else b"")  # every file distinct
    marker.write_text("")
    return data


def files_of(data: Path) -> list[str]:
    return sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())


def warm_page_cache(data: Path) -> None:
    for rel in files_of(data):
        with open(data / rel, "rb") as fh:
            while fh.read(1 << 22):
                pass


def repro_hash(data: Path, cache_dir: Path) -> Run:
    env = {**ENV, "REPRO_CACHE_DIR": str(cache_dir)}
    return child([sys.executable, "-m", "repro", "hash", "--quiet", "."], data, env)


def dvc_add(data: Path, work: Path, no_commit: bool) -> Run:
    """`dvc add` of a fresh copy in a fresh repo; the copy is not timed."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dvc = str(Path(sys.executable).parent / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=work, env=ENV, check=True, capture_output=True)
    subprocess.run(["cp", "-r", str(data), str(work / "data")], check=True)
    run = child([dvc, "add", "-q", *(["--no-commit"] if no_commit else []), "data"], work)
    shutil.rmtree(work, ignore_errors=True)
    return run


def ceiling() -> float:
    """Single-core hashlib sha256 speed on this CPU, 1 MiB updates over 256 MiB in memory."""
    buf = os.urandom(256 << 20)
    view = memoryview(buf)
    best = 1e9
    for _ in range(3):
        h = hashlib.sha256()
        start = time.perf_counter()
        for i in range(0, len(buf), 1 << 20):
            h.update(view[i : i + (1 << 20)])
        best = min(best, time.perf_counter() - start)
    return len(buf) / best / GIB


def profile(data: Path, cache_dir: Path) -> None:
    """Where in-process time goes, cold then warm (the worker threads' C time shows as wait)."""
    sys.path.insert(0, str(REPO))
    from repro.source.filetree import expand_patterns
    from repro.source.hashcache import HashCache
    from repro.source.hashing import hash_files

    for label in ("cold", "warm"):
        prof = cProfile.Profile()
        prof.enable()
        with HashCache(cache_dir / "profile.sqlite") as cache:
            hash_files(data, expand_patterns(data, ["."]), cache=cache)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(10)
        lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
        print(f"\n  profile, {label} (in-process, tottime):")
        print("\n".join("    " + ln for ln in lines[-12:]))


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def row(name: str, runs: list[Run], nbytes: int, base: float | None) -> str:
    walls = [r.wall for r in runs]
    best = min(walls)
    ratio = f"{best / base:6.1f}x" if base else "   1.0x"
    return (f"  {name:<26} {best:8.3f} {statistics.median(walls):8.3f} {nbytes / best / GIB:8.2f}"
            f" {min(r.cpu for r in runs):8.2f} {max(r.rss_mb for r in runs):8.0f}   {ratio}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "repro-bench-hash")
    ap.add_argument("--shapes", default="many,one")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dvc-reps", type=int, default=1)
    ap.add_argument("--no-dvc", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()}")
    print(f"load average before: {os.getloadavg()}")
    print(f"ceiling: hashlib sha256 on one core, in memory: {ceiling():.2f} GiB/s")
    startup = min(child([sys.executable, "-m", "repro", "--version"], REPO).wall for _ in range(3))
    print(f"`python -m repro --version` (interpreter start-up, included below): {startup:.3f} s")
    for shape in args.shapes.split(","):
        data = generate(args.root, shape)
        files = files_of(data)
        nbytes = sum((data / f).stat().st_size for f in files)
        warm_page_cache(data)
        time.sleep(2.1)  # older than the stat cache's racy window, as data at rest is
        caches = Path(tempfile.mkdtemp(prefix="repro-bench-cache-"))
        cold = [repro_hash(data, caches / f"cold-{i}") for i in range(args.reps)]
        repro_hash(data, caches / "warm")  # fill it
        warm = [repro_hash(data, caches / "warm") for _ in range(args.reps)]
        sums = [child(["sha256sum", "--", *files], data) for _ in range(args.reps)]
        base = min(r.wall for r in cold)
        print(f"\n{shape}: {len(files):,} files, {nbytes / GIB:.2f} GiB (page cache warm)")
        print(f"  {'':<26} {'best s':>8} {'median':>8} {'GiB/s':>8} {'cpu s':>8} {'RSS MB':>8}   time / repro cold")
        print(row("repro hash, cold", cold, nbytes, None))
        print(row("repro hash, warm (cached)", warm, nbytes, base))
        print(row("sha256sum", sums, nbytes, base))
        if not args.no_dvc:
            work = args.root / "dvc-work"
            for label, no_commit in (("dvc add (default)", False), ("dvc add --no-commit", True)):
                runs = [dvc_add(data, work, no_commit) for _ in range(args.dvc_reps)]
                print(row(label, runs, nbytes, base))
        if args.profile:
            profile(data, caches)
        shutil.rmtree(caches, ignore_errors=True)
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
