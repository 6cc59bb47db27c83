"""What does `repro verify` cost? Ratios against baselines measured in the same run.

    .venv/bin/python benchmarks/verify_time.py [--repeats 3] [--synthetic-mib 256]

1. Full verify (hash inputs, check pins, rebuild in a fresh process, compare) wall
   time against the `repro train` that wrote the lock, on the example project
   (this repository's configs/ and the digits data, default 300 steps).
   Goal: verify <= training + hashing.
2. `repro verify --inputs-only` wall time against `sha256sum` over the same files
   (data, project code, repro's own source), on the example and on a synthetic
   data set of N MiB in 64 files (page cache warm: each is read once first).

Every figure is a median of interleaved repeats, processes started fresh.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_OFFLINE": "1"}


def timed(cmd: list[str], cwd: Path, expect: int = 0) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return seconds


def repro(*args: str) -> list[str]:
    return [sys.executable, "-m", "repro", *args]


def lock_files(lock: dict, root: Path) -> list[str]:
    """Absolute paths of every file verify --inputs-only hashes, for sha256sum."""
    files = [root / f["path"] for f in lock["inputs"]["data"]["files"] + lock["inputs"]["code"]["files"]]
    files += [REPO / f["path"] for f in lock["toolchain"]["repro"]["files"]]
    return [str(p) for p in files]


def synthetic_lock(lock: dict, root: Path, mib: int) -> dict:
    """The example's lock, re-pointed at `mib` MiB of random data in 64 files under `root`."""
    from repro.source.data import DataSpec, data_file_list
    from repro.source.inputs import config_digest, files_block

    folder = root / "data" / "synth"
    folder.mkdir(parents=True)
    per_file = mib * (1 << 20) // 64
    for i in range(64):
        (folder / f"part-{i:02d}.csv").write_bytes(os.urandom(per_file))
    shutil.copytree(REPO / "configs", root / "configs")
    lock = json.loads(json.dumps(lock))
    resolved = lock["inputs"]["config"]["resolved"]
    resolved["data"]["data_files"] = ["data/synth"]
    lock["inputs"]["config"]["sha256"] = config_digest(resolved)["sha256"]
    block = files_block(root, data_file_list(root, DataSpec.from_config(resolved)))
    lock["inputs"]["data"].update(files=block["files"], root_digest=block["root_digest"])
    return lock


def inputs_only_vs_sha256sum(lock_path: Path, root: Path, repeats: int) -> tuple[float, float]:
    lock = json.loads(lock_path.read_text())
    files = lock_files(lock, root)
    subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(timed(repro("verify", "--quiet", "--inputs-only", "--root", str(root), str(lock_path)), REPO))
        theirs.append(timed(["sha256sum", *files], REPO))
    return statistics.median(ours), statistics.median(theirs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--synthetic-mib", type=int, default=256)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="repro-bench-verify-"))
    try:
        train_s, verify_s, train_in, rebuild_in = [], [], [], []
        for i in range(args.repeats):
            out, work = tmp / f"run{i}", tmp / f"work{i}"
            train_s.append(timed(repro("train", "--quiet", f"out_dir={out}"), REPO))
            verify_s.append(timed(repro("verify", "--quiet", "--no-record", "--work-dir", str(work), "--root",
                                        str(REPO), str(out / "repro.lock")), REPO))
            # the build's own wall time (after imports), in the training and in verify's child
            train_in.append(json.loads((out / "run.json").read_text())["wall_seconds"])
            rebuild_in.append(json.loads((work / "out" / "run.json").read_text())["wall_seconds"])
        lock_path = tmp / "run0" / "repro.lock"
        ex_ours, ex_sum = inputs_only_vs_sha256sum(lock_path, REPO, max(args.repeats, 5))
        synth_root = tmp / "synth"
        synth_lock = synth_root / "repro.lock"
        synth = synthetic_lock(json.loads(lock_path.read_text()), synth_root, args.synthetic_mib)
        synth_lock.write_text(json.dumps(synth))
        sy_ours, sy_sum = inputs_only_vs_sha256sum(synth_lock, synth_root, max(args.repeats, 5))
        n_files = len(lock_files(json.loads(lock_path.read_text()), REPO))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    t, v = statistics.median(train_s), statistics.median(verify_s)
    w = 50
    print(f"cores: {os.cpu_count()}, repeats: {args.repeats}; medians (min in brackets: least disturbed by load)")
    print(f"{'':{w}} {'seconds':>8} {'ratio':>7}")
    print(f"{'repro train (example, 300 steps)':{w}} {t:8.2f} {1.0:7.2f}   [{min(train_s):.2f} s]")
    print(f"{'repro verify (hash + pinned rebuild + compare)':{w}} {v:8.2f} {v / t:7.2f}x  "
          f"[{min(verify_s):.2f} s, {min(verify_s) / min(train_s):.2f}x]")
    ti, ri = statistics.median(train_in), statistics.median(rebuild_in)
    print(f"{'  build inside repro train':{w}} {ti:8.2f} {1.0:7.2f}")
    print(f"{'  build inside the rebuild process':{w}} {ri:8.2f} {ri / ti:7.2f}x")
    print(f"{'  verify minus the rebuild build':{w}} {v - ri:8.2f}   (train minus build: {t - ti:.2f})")
    print(f"{f'sha256sum, example ({n_files} files)':{w}} {ex_sum:8.3f} {1.0:7.2f}")
    print(f"{'repro verify --inputs-only, example':{w}} {ex_ours:8.3f} {ex_ours / ex_sum:7.2f}x")
    print(f"{f'sha256sum, {args.synthetic_mib} MiB in 64 files + code':{w}} {sy_sum:8.3f} {1.0:7.2f}")
    print(f"{f'repro verify --inputs-only, {args.synthetic_mib} MiB':{w}} {sy_ours:8.3f} {sy_ours / sy_sum:7.2f}x")

if __name__ == "__main__":
    main()
