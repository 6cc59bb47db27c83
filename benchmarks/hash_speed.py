"""How close does `repro hash` come to this machine's limit, beside `sha256sum` and `dvc add`?

    .venv/bin/python benchmarks/hash_speed.py                     # 10,000 files and one file, best of 3
    .venv/bin/python benchmarks/hash_speed.py --shapes million    # 1,000,000 files of 1 KiB (~4 GB, minutes)

Every figure is printed as a ratio to a limit measured in the same run, so a
loaded machine skews both sides alike (1.00 = at the limit; higher is better),
with the load average before and after each shape. Where the machine is shared,
the CPU ratio is the steadier one: the CPU seconds any sha256 of the same bytes
costs (the per-CPU-second rate below, plus the start's CPU), over the CPU
seconds the tool spent.

- the hashing limit: the interpreter's start (`python -m repro --version`) plus
  the bytes over hashlib's single-core sha256 rate times the usable cores, the
  rate measured as one `update` over a 256 MiB buffer (best of 3): sha256 of
  bytes that come from memory, as a file's bytes in the page cache do. One file
  is one sha256 stream, so its limit uses one core. The `strict` column uses
  sha256 of a 1 MiB buffer hashed 256 times instead (the bytes already in the
  CPU's cache: sha256 alone), a bound no reader of files reaches, since every
  byte must first come from memory.
- the re-check limit: the start, plus one `lstat` of every file (in-process,
  best of 3): what any stat-based check must pay.

Shapes (generated under --root once, reused while their marker file matches;
`million` is removed again afterwards unless --keep):

- many: 1 GiB as 10,000 files in 100 folders;
- one: 1 GiB as one file;
- million: 1,000,000 files of 1 KiB in 1,000 folders.

Each tool runs as a child process with the data in the page cache: wall time,
CPU seconds and peak RSS (`getrusage` of a one-child wrapper). "Cold" is a
fresh, empty stat cache (every byte read); "warm" re-checks with that cache and
nothing changed. `--hash blake3` adds the optional BLAKE3 digest beside sha256.
`sha256sum` runs through `xargs -P <usable cores>`, so coreutils gets every core
too. `dvc add` runs on a fresh copy in a fresh git+dvc repo (not for `million`:
hours). --phases adds where the time of a warm re-check goes, in-process.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
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
SHAPES = {"many": (10_000, GIB // 10_000), "one": (1, GIB), "million": (1_000_000, 1024)}
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
    per_folder = 100 if count <= 10_000 else 1000
    for i in range(count):
        folder = data / f"d{i // per_folder:03d}" if count > 1 else data
        if i % per_folder == 0:
            folder.mkdir(exist_ok=True)
        fd = os.open(folder / f"f{i:07d}.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            if count == 1:
                for _ in range(size >> 20):
                    fh.write(os.urandom(1 << 20))
            else:
                fh.write(block[: size - 8] + i.to_bytes(8, "little"))  # every file distinct
    marker.write_text("")
    return data


def files_of(data: Path) -> list[str]:
    """The data files (not a `.repro` cache left by a run without REPRO_CACHE_DIR)."""
    return sorted(str(Path(dp, f).relative_to(data)) for dp, _, fs in os.walk(data) for f in fs
                  if ".repro" not in Path(dp).relative_to(data).parts)


def warm_page_cache(data: Path, files: list[str]) -> None:
    for rel in files:
        with open(data / rel, "rb") as fh:
            while fh.read(1 << 22):
                pass


def one_core_speed() -> dict[str, tuple[float, float]]:
    """hashlib sha256 on one core, best of 3 each way: GiB/s of wall and of CPU time.

    "streamed": one `update` over a 256 MiB buffer (memory bandwidth included);
    "in cache": a 1 MiB buffer hashed 256 times (sha256 alone). On a loaded machine
    the wall figure falls with the share of a core this process gets; the CPU figure
    is what a core does while it runs us.
    """
    big, small = os.urandom(256 << 20), os.urandom(1 << 20)

    def cached() -> None:
        for _ in range(256):
            hashlib.sha256(small).digest()

    out = {}
    for name, fn in (("streamed", lambda: hashlib.sha256(big).digest()), ("in cache", cached)):
        walls, cpus = [], []
        for _ in range(3):
            c = time.process_time()
            walls.append(_timed(fn))
            cpus.append(time.process_time() - c)
        out[name] = (len(big) / min(walls) / GIB, len(big) / min(cpus) / GIB)
    return out


def all_cores_speed(cores: int) -> float:
    """hashlib sha256 on `cores` threads at once, each over its own 256 MiB buffer (best of 3): GiB/s in all.

    Shown beside the limit, which assumes `cores` times one core's rate: on a VM
    whose cores share a physical one, or a machine with another busy process,
    this is where that assumption shows.
    """
    import threading

    bufs = [os.urandom(256 << 20) for _ in range(cores)]

    def run() -> None:
        threads = [threading.Thread(target=lambda b=b: hashlib.sha256(b).digest()) for b in bufs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return sum(map(len, bufs)) / min(_timed(run) for _ in range(3)) / GIB


def blake3_speed() -> float | None:
    try:
        from blake3 import blake3
    except ImportError:
        return None
    buf = os.urandom(256 << 20)
    return len(buf) / min(_timed(lambda: blake3(buf).digest()) for _ in range(3)) / GIB


def lstat_time(data: Path, files: list[str]) -> float:
    """One lstat of every file, in-process, best of 3: the floor of any stat-based re-check."""
    full = [f"{data}/{f}" for f in files]
    return min(_timed(lambda: [os.lstat(p) for p in full]) for _ in range(3))


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def repro_hash(data: Path, cache_dir: Path, *extra: str) -> Run:
    env = {**ENV, "REPRO_CACHE_DIR": str(cache_dir)}
    return child([sys.executable, "-m", "repro", "hash", "--quiet", *extra, "."], data, env)


def sha256sum(data: Path, cores: int, nfiles: int) -> Run:
    """coreutils over every file, `cores` processes at a time through `xargs -P`, each given an equal share."""
    per = max(1, -(-nfiles // (4 * cores)))  # four batches a core: the last one to finish is short
    return child(["sh", "-c", f"find . -type f -not -path './.repro/*' -print0 | xargs -0 -P {cores} -n {per} "
                  "sha256sum --"], data)


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


def phases(data: Path, cache_dir: Path) -> None:
    """Where a warm re-check's time goes, step by step, in this process (CPU seconds and peak RSS)."""
    import io
    import resource

    sys.path.insert(0, str(REPO))
    from repro.source.hashcache import HashCache
    from repro.source.hashtree import hash_tree, sorted_order
    from repro.source.locate import locate
    from repro.source.walk import expand_patterns, locate_patterns

    def cpu() -> float:
        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_utime + u.ru_stime

    steps: list[tuple[str, float]] = []
    t = cpu()

    def step(name: str) -> None:
        nonlocal t
        now = cpu()
        steps.append((name, now - t))
        t = now

    files = expand_patterns(data, ["."])
    step("walk, names only (expand_patterns)")
    keys, _ = locate(str(data), files)
    step("lstat a list of paths (locate)")
    located = locate_patterns(data, ["."])
    step("walk + lstat (locate_patterns)")
    with HashCache(cache_dir / "hashcache.sqlite") as cache:
        hits = sum(len(hit) for hit, _, _ in cache.lookup(str(data), files, sorted_order(files), keys, ("sha256",)))
        step(f"stat cache lookup ({hits:,} hits)")
        tree = hash_tree(data, located, cache=cache)
        step("hash_tree of the walk (lookup again)")
    tree.root_digest(io.BytesIO())
    step("listing + root digest")
    print("\n  where a warm re-check's time goes (in-process, CPU s; peak RSS: the table's child runs):")
    for name, seconds in steps:
        print(f"    {name:<36} {seconds:7.2f}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def row(name: str, runs: list[Run], limit: float, nbytes: int | None, cpu_limit: float | None = None,
        strict: float | None = None) -> str:
    """Best and median wall, GiB/s, CPU s, peak RSS; limit/time for wall (and for CPU and the strict limit)."""
    walls = [r.wall for r in runs]
    best, cpu = min(walls), min(r.cpu for r in runs)
    rate = f"{nbytes / best / GIB:8.2f}" if nbytes else f"{'':>8}"
    by_cpu = f"{cpu_limit / cpu:6.2f}" if cpu_limit else f"{'':>6}"
    by_strict = f"{strict / best:9.2f}" if strict else ""
    return (f"  {name:<34} {best:8.3f} {statistics.median(walls):8.3f} {rate} {cpu:8.2f}"
            f" {max(r.rss_mb for r in runs):8.0f}   {limit / best:10.2f} {by_cpu}{by_strict}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(shape: str, args: argparse.Namespace, rate: tuple[float, float], strict_rate: float, cores: int,
            startup: Run) -> None:
    data = generate(args.root, shape)
    files = files_of(data)
    nbytes = sum((data / f).stat().st_size for f in files)
    warm_page_cache(data, files)
    time.sleep(2.1)  # older than the stat cache's racy window, as data at rest is
    before = load()
    usable = 1 if len(files) == 1 else cores
    limit = startup.wall + nbytes / GIB / (rate[0] * usable)
    strict = startup.wall + nbytes / GIB / (strict_rate * usable)
    cpu_limit = startup.cpu + nbytes / GIB / rate[1]  # the CPU any sha256 of these bytes costs, start included
    recheck = startup.wall + lstat_time(data, files)
    caches = Path(tempfile.mkdtemp(prefix="repro-bench-cache-"))
    reps = 1 if shape == "million" else args.reps
    cold = [repro_hash(data, caches / f"cold-{i}") for i in range(reps)]
    warm = [repro_hash(data, caches / "cold-0") for _ in range(reps)]
    b3 = [repro_hash(data, caches / f"b3-{i}", "--hash", "blake3") for i in range(reps)] if args.blake3 else []
    sums = [sha256sum(data, usable, len(files)) for _ in range(reps)]
    print(f"\n{shape}: {len(files):,} files, {nbytes / GIB:.2f} GiB (page cache warm); load average before: {before}")
    print(f"  limits: hash {limit:.3f} s ({usable} core{'s' if usable > 1 else ''}; strict {strict:.3f} s), "
          f"{cpu_limit:.3f} CPU s; re-check {recheck:.3f} s")
    print(f"  {'':<34} {'best s':>8} {'median':>8} {'GiB/s':>8} {'cpu s':>8} {'RSS MB':>8}   limit/time "
          "(cpu) (strict)")
    print(row("repro hash, cold", cold, limit, nbytes, cpu_limit, strict))
    print(row("repro hash, warm (stat cache)", warm, recheck, None))
    if b3:
        print(row("repro hash --hash blake3, cold", b3, limit, nbytes, cpu_limit, strict))
    print(row(f"sha256sum (xargs -P {usable})", sums, limit, nbytes, cpu_limit, strict))
    if not args.no_dvc and shape != "million":
        work = args.root / "dvc-work"
        for label, no_commit in (("dvc add", False), ("dvc add --no-commit", True)):
            print(row(label, [dvc_add(data, work, no_commit) for _ in range(args.dvc_reps)], limit, nbytes,
                      cpu_limit, strict))
    print(f"  load average after: {load()}")
    if args.phases or shape == "million":
        phases(data, caches / "cold-0")
    shutil.rmtree(caches, ignore_errors=True)
    if shape == "million" and not args.keep:
        shutil.rmtree(args.root / shape, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "repro-bench-hash")
    ap.add_argument("--shapes", default="many,one", help="comma-separated: many, one, million")
    ap.add_argument("--reps", type=int, default=3, help="runs of each (best and median shown; million: 1)")
    ap.add_argument("--dvc-reps", type=int, default=1)
    ap.add_argument("--no-dvc", action="store_true")
    ap.add_argument("--no-blake3", dest="blake3", action="store_false", help="skip the --hash blake3 runs")
    ap.add_argument("--phases", action="store_true", help="where a warm re-check's time goes (always for million)")
    ap.add_argument("--keep", action="store_true", help="keep the million-file tree for the next run")
    args = ap.parse_args()

    cores = len(os.sched_getaffinity(0))
    print(f"cpu: {cpu_model()}, {cores} usable cores; python {platform.python_version()}")
    print(f"load average before: {load()}")
    speeds = one_core_speed()
    for name, (wall, cpu) in speeds.items():
        print(f"hashlib sha256 on one core, {name}: {wall:.2f} GiB/s ({cpu:.2f} per CPU second)")
    rate, strict = speeds["streamed"], speeds["in cache"]
    together = all_cores_speed(cores)
    print(f"hashlib sha256 on {cores} threads at once, streamed: {together:.2f} GiB/s in all "
          f"({together / rate[0]:.2f}x one core)")
    b3 = blake3_speed()
    print(f"blake3 on one core (its own threads off): {b3:.2f} GiB/s" if b3 else "blake3 not installed")
    startup = min((child([sys.executable, "-m", "repro", "--version"], REPO) for _ in range(3)), key=lambda r: r.wall)
    print(f"interpreter start (`python -m repro --version`): {startup.wall:.3f} s ({startup.cpu:.3f} CPU s)")
    for shape in args.shapes.split(","):
        measure(shape, args, rate, strict[0], cores, startup)
    print(f"\nload average after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
