"""Do the profiles hold across instruction sets? This x86-64 host against aarch64 under qemu-user.

    .venv/bin/python benchmarks/aarch64_portable.py [--steps 5] [--profiles default,native-cap] [--probe]
        [--cpu neoverse-n1] [--cache ~/.cache/repro-aarch64] [--work DIR] [--again] [--json]

Needs Debian or Ubuntu (apt, dpkg), `qemu-user` (qemu-aarch64), Debian's archive and PyPI,
and root the first time (`dpkg --add-architecture arm64`). Nothing is built from source.
Setup is idempotent and lives in the cache folder (about 3 GB of wheels, 5 GB unpacked):

1. `sysroot/`: Debian's arm64 python3.11 and the libraries it needs (`apt-get download`, `dpkg -x`).
2. `site-packages/`: the aarch64 wheels from PyPI of what `repro train` imports, at the reference
   pins (requirements/reference.txt). PyPI's aarch64 `torch==2.13.0` is the CUDA build
   (`2.13.0+cu130`): its nvidia-* wheels come along, are loaded at import, and are never used.
3. Two files qemu-user 7.2 does not emulate for aarch64, put in the sysroot (which
   `qemu-aarch64 -L` consults first): `/proc/cpuinfo` (pytorch's cpuinfo segfaults on the host's
   x86 one) and `MIDR_EL1` in sysfs (oneDNN's xbyak_aarch64 reads it).
4. `env/bin/python`: a venv-style script that runs the sysroot's python under
   `qemu-aarch64 -cpu CPU`, so repro's build child is emulated too (the same mechanism as
   `repro.check.emulate` for `repro check`'s x86 CPU models); `run-aarch64` hands it to `repro check`'s
   `train` as a command prefix that replaces the host interpreter.

Then, per profile, the embedded digits example trains `--steps` steps on the host and on the
emulated CPU, each in a fresh process through `repro check`'s own `train` (clean shell), and
the weights are compared by sha256. When they differ, the per-step digests name the first
differing step and `repro check`'s Localizer replays it on both under the dispatch recorder to
name the first differing op (its phase, module, shape, differing elements, largest ulp distance).

Prints the probe (with --probe), then per profile one line per build (weights sha256 prefix and
seconds) and the verdict. Measured before the portable kernels, on a loaded 2-core EPYC (qemu 7.2,
--steps 5), with the old portable profile (ATen level default, MKL_CBWR=COMPATIBLE, PortableAdam):
    portable  host          c70d09add632  (18.0 s)
    portable  aarch64       0576c8229046  (121.9 s)
    portable  different: first step 1; step 1 op #1 aten::addmm.default in forward (net.0), shape [64, 64]
              float32: 1621 of 4096 elements differ, max 1024 ulp (localized in ... s)
Now the default profile stops on aarch64 (exit 3: its kernels are x86-64 code); BENCHMARKS.md says
what an aarch64 port of them would take.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from repro.check.localize import Localizer, first_step  # noqa: E402
from repro.check.project import Project  # noqa: E402
from repro.check.runs import Run, train  # noqa: E402
from repro.check.variations import BASELINE, Variation  # noqa: E402
from repro.source.compose import compose  # noqa: E402
from repro.source.config import find_config  # noqa: E402

# "default" loads repro's portable kernels, which are x86-64 (AVX2) code: on aarch64 it stops with
# exit 3 saying so (docs/portable.md). "native-cap" is torch's own kernels at the ATen level every CPU
# has (oneDNN on, torch.optim.Adam): what an aarch64 rebuild of an x86 lock can do today.
PROFILES = {"default": [], "native-cap": ["build=native", "build.cpu_capability=default"]}
# What `repro train` of the digits example imports (parent and build child), by distribution name.
REQUIREMENTS = ["torch", "numpy", "safetensors", "hydra-core", "omegaconf", "antlr4-python3-runtime", "PyYAML",
                "jsonschema", "accelerate", "datasets", "xxhash", "packaging"]
SDIST_ONLY = ["antlr4-python3-runtime"]  # pure Python, no wheel on PyPI: built here once, py3-none-any
DEB_ROOTS = ["python3.11-minimal", "libpython3.11-stdlib", "libgomp1", "libstdc++6"]
DEB_SKIP = {"dpkg", "tar", "install-info"}  # tools the dependency closure drags in; the interpreter needs none
# What pytorch's cpuinfo and oneDNN read to identify the CPU: MIDR fields and /proc/cpuinfo's
# features, which must match what qemu emulates (a feature listed but not emulated is a SIGILL).
MIDR = {"neoverse-n1": ("0x41", "0x3", "0xd0c", "1"), "cortex-a72": ("0x41", "0x0", "0xd08", "3"),
        "cortex-a76": ("0x41", "0x4", "0xd0b", "1"), "a64fx": ("0x46", "0x1", "0x001", "0")}
_V80 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V82 = _V80 + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"
FEATURES = {"neoverse-n1": _V82 + " ssbs", "cortex-a72": _V80, "cortex-a76": _V82,
            "a64fx": "fp asimd evtstrm sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm fcma dcpop sve"}


def sh(*cmd: str, cwd: Path | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def sysroot(cache: Path, cpu: str) -> Path:
    """Debian's arm64 python3.11 and its libraries, unpacked; the CPU files qemu-user lacks."""
    root = cache / "sysroot"
    if not (root / ".done").is_file():
        if "arm64" not in sh("dpkg", "--print-foreign-architectures").split():
            sh("dpkg", "--add-architecture", "arm64")
            sh("apt-get", "update")
        debs = cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        closure = sh("apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                     "--no-breaks", "--no-replaces", "--no-enhances", *(f"{p}:arm64" for p in DEB_ROOTS))
        names = sorted({ln for ln in closure.splitlines() if ln.endswith(":arm64") and not ln.startswith((" ", "<"))
                        and ln.removesuffix(":arm64") not in DEB_SKIP})
        sh("apt-get", "download", *names, cwd=debs)
        for deb in sorted(debs.glob("*_arm64.deb")):
            sh("dpkg", "-x", str(deb), str(root))
        (root / ".done").write_text("\n".join(names) + "\n")
    implementer, variant, part, revision = MIDR[cpu]
    block = (f"BogoMIPS\t: 50.00\nFeatures\t: {FEATURES[cpu]}\nCPU implementer\t: {implementer}\n"
             f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n")
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text("\n".join(f"processor\t: {i}\n{block}" for i in range(os.cpu_count() or 1)))
    midr = f"0x00000000{implementer[2:]}{int(variant, 16):x}f{part[2:]}{int(revision):x}\n"
    for i in range(os.cpu_count() or 1):
        ident = root / "sys" / "devices" / "system" / "cpu" / f"cpu{i}" / "regs" / "identification"
        ident.mkdir(parents=True, exist_ok=True)
        (ident / "midr_el1").write_text(midr)
    return root


def site_packages(cache: Path) -> Path:
    """aarch64 wheels of REQUIREMENTS at the reference pins, installed into one folder."""
    target, wheels = cache / "site-packages", cache / "wheels"
    stamp = "\n".join(REQUIREMENTS) + "\n" + (REPO / "requirements" / "reference.txt").read_text()
    if (target / ".done").is_file() and (target / ".done").read_text() == stamp:
        return target
    wheels.mkdir(parents=True, exist_ok=True)
    pins = REPO / "requirements" / "reference.txt"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    pinned = {ln.split("==")[0].lower(): ln for ln in pins.read_text().splitlines() if "==" in ln}
    for name in SDIST_ONLY:
        sh(*pip, "wheel", "--no-deps", "-w", str(wheels), pinned[name.lower()])
    platforms = [f"--platform=manylinux_2_{v}_aarch64" for v in range(17, 37)]
    tags = [*platforms, "--platform=manylinux2014_aarch64", "--platform=linux_aarch64", "--python-version=3.11",
            "--implementation=cp", "--abi=cp311", "--abi=abi3", "--abi=none", "--only-binary=:all:",
            "-c", str(pins), *REQUIREMENTS]
    sh(*pip, "download", "-d", str(wheels), "--find-links", str(wheels), *tags)
    shutil.rmtree(target, ignore_errors=True)
    sh(*pip, "install", "--no-index", "--find-links", str(wheels), "--target", str(target), *tags)
    (target / ".done").write_text(stamp)
    return target


def aarch64_python(cache: Path, cpu: str) -> Path:
    """`run-aarch64`: a command prefix that swaps the host interpreter for the emulated one."""
    root, site = sysroot(cache, cpu), site_packages(cache)
    env = cache / f"env-{cpu}"
    (env / "bin").mkdir(parents=True, exist_ok=True)
    (env / "lib" / "python3.11").mkdir(parents=True, exist_ok=True)
    link = env / "lib" / "python3.11" / "site-packages"
    if not link.is_symlink():
        link.symlink_to(site)
    (env / "pyvenv.cfg").write_text(f"home = {root / 'usr' / 'bin'}\ninclude-system-site-packages = false\n")
    python = env / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec qemu-aarch64 -cpu {cpu} -L {root} -0 "$0" {root}/usr/bin/python3.11 "$@"\n')
    prefix = env / "run-aarch64"
    prefix.write_text("#!/bin/sh\n# $1 is the host interpreter; run the rest under the emulated one.\n"
                      f'shift\nexec {python} "$@"\n')
    for f in (python, prefix):
        f.chmod(0o755)
    return prefix


# Single ops on fixed inputs, with torch's own kernels at the common ATen level, in each interpreter: which
# ops give other bits on aarch64 by themselves (in a training run, the first one poisons the rest).
PROBE = r"""
import hashlib, json, os, sys
import torch
torch.set_num_threads(2); torch.use_deterministic_algorithms(True); torch.backends.mkldnn.enabled = False
def exact(*shape, k=1):  # the same float32 values on any machine: integers scaled by a power of two
    n = torch.arange(1, 1 + torch.Size(shape).numel(), dtype=torch.int64) * (2654435761 * k)
    return ((n % 2**24).to(torch.float32) / 2**24 - 0.5).reshape(shape)
a, b, w, big = exact(64, 64), exact(64, 64, k=3), exact(64), exact(64, 4096, k=5)
pos = a.abs() + 2**-10
ops = {"mm 64x64x64": lambda: a @ b, "addmm 64x64x64": lambda: torch.addmm(w, a, b),
       "mm 64x4096x64 (long sum)": lambda: big @ big.T, "sum 64x4096": lambda: big.sum(1),
       "mul+add (elementwise)": lambda: a * b + w, "div": lambda: a / pos, "relu": lambda: torch.relu(a),
       "exp": lambda: torch.exp(a), "log": lambda: torch.log(pos), "tanh": lambda: torch.tanh(a),
       "log_softmax": lambda: torch.log_softmax(a, 1), "torch.sqrt": lambda: torch.sqrt(pos)}
out = {k: hashlib.sha256(f().contiguous().numpy().tobytes()).hexdigest() for k, f in ops.items()}
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "ops": out}))
"""
PROBE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "2"}


def probe(prefix: Path) -> dict[str, Any]:
    """PROBE on the host and on aarch64: per op, whether the bits agree."""
    env = {**os.environ, **PROBE_ENV, "PYTHONPATH": str(REPO)}
    runs = {}
    for name, cmd in (("host", [sys.executable]), ("aarch64", [str(prefix), sys.executable])):
        started = time.monotonic()
        out = subprocess.run([*cmd, "-c", PROBE], env=env, check=True, capture_output=True, text=True).stdout
        runs[name] = {**json.loads(out.splitlines()[-1]), "seconds": round(time.monotonic() - started, 1)}
    ops = {k: runs["host"]["ops"][k] == runs["aarch64"]["ops"][k] for k in runs["host"]["ops"]}
    return {"same": ops, "capability": {k: v["capability"] for k, v in runs.items()},
            "seconds": {k: v["seconds"] for k, v in runs.items()}}


def compare(profile: str, steps: int, prefix: Path, cpu: str, work: Path, again: bool) -> dict[str, Any]:
    """Host and aarch64 builds of one profile; where they part."""
    (work / profile).mkdir(parents=True)
    source = find_config(None, "train", None, work / profile)  # no configs/ there: the embedded example
    overrides = PROFILES[profile]
    resolved = compose(source, [*overrides, f"trainer.max_steps={steps}"])
    project = Project(source, overrides, resolved, steps, work / profile)
    arm = Variation("cpu", f"aarch64 {cpu} (qemu)", f"qemu-aarch64 -cpu {cpu}", prefix=(str(prefix),))
    base, other = train(project, BASELINE), train(project, arm)
    row: dict[str, Any] = {"profile": profile, "steps": steps, "host": _run(base), "aarch64": _run(other)}
    if again:
        row["aarch64_again"] = _run(train(project, arm))
    if base.error or other.error:
        row["result"] = "failed"
        return row
    row["result"] = "identical" if base.weights_sha256 == other.weights_sha256 else "different"
    step = first_step(base, other)
    row["first_step"] = step
    if step is not None:
        started = time.monotonic()
        row["first_op"] = Localizer(project).op(arm, step)
        row["localize_seconds"] = round(time.monotonic() - started, 1)
    return row


def _run(run: Run) -> dict[str, Any]:
    return {"sha256": run.weights_sha256, "seconds": run.seconds, "error": run.error,
            "step_digests": run.digests}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--profiles", default="default,native-cap", help=",".join(PROFILES))
    ap.add_argument("--cpu", default="neoverse-n1", choices=sorted(MIDR))
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "repro-aarch64")
    ap.add_argument("--work", type=Path, help="keep every run here (default: a temporary folder, removed)")
    ap.add_argument("--again", action="store_true", help="a second aarch64 build, to show emulation is stable")
    ap.add_argument("--probe", action="store_true", help="also single ops on fixed inputs (PROBE)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if shutil.which("qemu-aarch64") is None:
        sys.exit("qemu-aarch64 not found: apt-get install qemu-user")
    started = time.monotonic()
    prefix = aarch64_python(args.cache.expanduser(), args.cpu)
    work = (args.work or Path(tempfile.mkdtemp(prefix="repro-aarch64-"))).resolve()
    report: dict[str, Any] = {"host": platform.machine(), "cpu": args.cpu, "load_before": os.getloadavg(),
                              "setup_seconds": round(time.monotonic() - started, 1), "profiles": []}
    if args.probe:
        report["probe"] = probe(prefix)
        if not args.json:
            print("ops on fixed inputs, host vs aarch64 (ATen default level, oneDNN off, MKL_CBWR=COMPATIBLE):")
            for op, same in report["probe"]["same"].items():
                print(f"  {op:30} {'same' if same else 'DIFFERENT'}")
    try:
        for profile in filter(None, args.profiles.split(",")):
            row = compare(profile, args.steps, prefix, args.cpu, work, args.again)
            report["profiles"].append(row)
            if not args.json:
                _print(row)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1, sort_keys=True) if args.json else f"setup {report['setup_seconds']} s; "
          f"load average {report['load_before']} before, {report['load_after']} after")
    return 0


def _print(row: dict[str, Any]) -> None:
    p = row["profile"]
    for name in ("host", "aarch64", "aarch64_again"):
        if name in row:
            r = row[name]
            print(f"{p:9} {name:13} {(r['sha256'] or r['error'] or '')[:12]}  ({r['seconds']:.1f} s)")
    verdict = row["result"]
    if "first_step" in row:
        verdict += f": first step {row['first_step']}"
    if "first_op" in row:
        verdict += "; " + str(row["first_op"].get("line") or row["first_op"].get("error"))
        verdict += f" (localized in {row['localize_seconds']} s)"
    print(f"{p:9} {verdict}")


if __name__ == "__main__":
    raise SystemExit(main())
