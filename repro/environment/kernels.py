"""Build repro's portable CPU kernels once per toolchain, before a build starts. No torch import.

The default profile (`build.kernels: portable`) replaces torch's vendor-dispatched CPU kernels with
the fixed-order ones in `repro/train/kernels/` (docs/portable.md). They are C++ compiled against the
installed torch, so the library is built here, in the process that launches a build, and the build
child only loads it: a child in a read-only sandbox never needs a compiler or a writable cache.

The library lives in the user's cache, keyed by everything it is made from (its sources, the flags,
the compiler's version, torch's version and headers path), so any change builds a new one and two
toolchains never share one. It is written to a temp file and renamed into place under a file lock,
so builds started side by side compile once and never load a half-written file. The compiler is
recorded in the lock's toolchain (`kernels.cxx`); the flags pin the arithmetic (no contraction of
`a*b+c` into an FMA that the source did not write, no fast-math), so the compiler cannot change a bit.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from repro.errors import EnvironmentMismatch

SOURCES_DIR = Path(__file__).resolve().parent.parent / "train" / "kernels"
SOURCES = ("portable.cpp", "gemm.h", "attention.h")  # the library's source files, in SOURCES_DIR
LIBRARY_NAME = "repro_portable.so"
# -ffp-contract=off: the only fused multiply-adds are the ones the source writes. AVX2/FMA is the
# baseline every supported CPU has; the AVX-512 kernel is selected per function at run time.
# CPU_CAPABILITY=AVX2 makes at::vec::Vectorized the AVX2 code ATen itself runs at that level.
FLAGS = ("-O2", "-std=c++17", "-fPIC", "-shared", "-fopenmp", "-mavx2", "-mfma", "-ffp-contract=off",
         "-fno-fast-math", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-w")
COMPILE_TIMEOUT = 600  # seconds; a first build takes about 10 s of one core


def torch_dir() -> Path:
    """The installed torch package folder, found without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentMismatch("build.kernels=portable: torch is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations)))


def compiler() -> str:
    """The C++ compiler: `$CXX`, else `c++` on the PATH."""
    name = os.environ.get("CXX") or "c++"
    found = shutil.which(name)
    if found is None:
        raise EnvironmentMismatch(
            f"build.kernels=portable needs a C++ compiler to build repro's portable kernels once ({name!r} is not "
            "on the PATH; on Debian or Ubuntu: apt-get install g++), or train with build=native")
    return found


def compiler_version(cxx: str) -> str:
    """The first line of `cxx --version`, e.g. 'c++ (Debian 12.2.0-14+deb12u1) 12.2.0'."""
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnvironmentMismatch(f"build.kernels=portable: cannot run the C++ compiler {cxx} ({exc})") from None
    return out.splitlines()[0].strip() if out.strip() else cxx


def cache_root() -> Path:
    """`$REPRO_KERNEL_CACHE`, else `$XDG_CACHE_HOME/repro/kernels`, else `~/.cache/repro/kernels`."""
    explicit = os.environ.get("REPRO_KERNEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "repro" / "kernels"


def library_key(cxx_version: str, torch: Path) -> str:
    """What the library is made from: sources, flags, compiler, torch (version and where its headers are)."""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (SOURCES_DIR / name).read_bytes() + b"\0")
    for part in (*FLAGS, cxx_version, metadata.version("torch"), str(torch)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def library() -> tuple[Path, str]:
    """The built library (compiled now if this toolchain has none yet) and the compiler's version line."""
    from filelock import FileLock

    if platform.machine() not in ("x86_64", "AMD64"):
        raise EnvironmentMismatch(
            f"build.kernels=portable: repro's portable kernels are x86-64 (AVX2) code and this machine is "
            f"{platform.machine()}; train with build=native (docs/portable.md)")
    cxx = compiler()
    version = compiler_version(cxx)
    torch = torch_dir()
    folder = cache_root() / library_key(version, torch)[:32]
    path = folder / LIBRARY_NAME
    if path.is_file():
        return path, version
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock")):
        if not path.is_file():
            _compile(cxx, torch, folder, path)
    return path, version


def _compile(cxx: str, torch: Path, folder: Path, path: Path) -> None:
    """Compile into a temp file beside `path`, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    command = [cxx, *FLAGS, f"-I{torch / 'include'}", f"-I{torch / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
               str(SOURCES_DIR / "portable.cpp"), "-o", tmp, f"-L{torch / 'lib'}", "-lc10", "-ltorch_cpu"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
        if done.returncode != 0:
            tail = [ln for ln in done.stderr.splitlines() if "error" in ln][:1] or done.stderr.splitlines()[-1:]
            raise EnvironmentMismatch(f"build.kernels=portable: compiling repro's portable kernels with {cxx} failed"
                                      + (f": {tail[0].strip()}" if tail else "") + "; or train with build=native")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except subprocess.TimeoutExpired:
        raise EnvironmentMismatch(f"build.kernels=portable: compiling repro's portable kernels took over "
                                  f"{COMPILE_TIMEOUT} s") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
