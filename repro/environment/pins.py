"""The pins that decide the bits: resolved from config, recorded, compared. No torch.

Resolving happens before torch is imported because `ATEN_CPU_CAPABILITY` is read
once, at torch's first dispatch. `repro.train.determinism` applies the torch-side flags.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from repro.environment.machine import cpu_flags, machine_cores
from repro.errors import ConfigError, EnvironmentMismatch

# Environment variables from the user's shell that could change the bits or the
# threading; a rebuild process starts without them and gets ours instead.
SHELL_KNOBS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS", "MKL_DYNAMIC", "KMP_AFFINITY", "GOMP_CPU_AFFINITY",
    "ATEN_CPU_CAPABILITY", "CUBLAS_WORKSPACE_CONFIG", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
    "PYTHONHASHSEED", "ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_CPU",
)

# ATen's x86 levels, lowest first, with the /proc/cpuinfo flags each one needs.
CPU_LEVELS: dict[str, tuple[str, ...]] = {
    "default": (),
    "avx2": ("avx2", "fma"),
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq"),
}
ARM_LEVELS = ("sve128", "sve256", "sve512")

# Packages whose versions are recorded in every lock. torch is the compiler.
RECORDED_PACKAGES = ("torch", "accelerate", "numpy", "datasets", "safetensors", "hydra-core")
# Drift in these makes a rebuild unable to promise the same bits (exit 3).
HARD_PACKAGES = ("torch",)
PRECISIONS = ("fp32", "bf16", "fp16")
PROFILES = ("default", "portable")


@dataclass(frozen=True)
class Pins:
    """Every setting that decides the bits, as concrete values (never `auto`)."""

    profile: str
    device: str
    threads: int
    cpu_capability: str
    precision: str
    seed: int
    world_size: int
    deterministic: bool
    mkldnn: bool
    mkl_cbwr: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def native_capability(flags: set[str] | None = None) -> str:
    """The highest ATen level these flags support (what torch picks by default)."""
    flags = cpu_flags() if flags is None else flags
    best = "default"
    for level, needed in CPU_LEVELS.items():
        if all(f in flags for f in needed):
            best = level
    return best


def check_capability(level: str, flags: set[str] | None = None) -> None:
    """Raise EnvironmentMismatch if this CPU cannot run `level`.

    Forcing a level the CPU lacks kills torch with SIGILL, so this is checked
    before torch is ever imported.
    """
    flags = cpu_flags() if flags is None else flags
    if level in ARM_LEVELS:
        if platform.machine() not in ("aarch64", "arm64") or "sve" not in flags:
            raise EnvironmentMismatch(
                f"cpu_capability {level!r} is an Arm SVE level; this {platform.machine()} CPU cannot run it"
            )
        return
    if level not in CPU_LEVELS:
        raise ConfigError(f"build.cpu_capability: {level!r} is not one of {sorted(CPU_LEVELS) + list(ARM_LEVELS)}")
    missing = [f for f in CPU_LEVELS[level] if f not in flags]
    if missing and platform.machine() in ("x86_64", "AMD64"):
        raise EnvironmentMismatch(
            f"cpu_capability {level!r} needs CPU flags {missing} that this CPU lacks; "
            f"it would die with SIGILL (highest level here: {native_capability(flags)!r})"
        )


def resolve_pins(build: dict[str, Any], seed: int) -> Pins:
    """Turn the `build` config group into concrete pins, checking combinations."""
    profile = str(build["profile"])
    if profile not in PROFILES:
        raise ConfigError(f"build.profile: {profile!r} is not one of {list(PROFILES)}")
    threads = build["threads"]
    threads = machine_cores() if threads == "auto" else threads
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"build.threads: expected a positive integer or 'auto', got {build['threads']!r}")
    level = str(build["cpu_capability"])
    level = native_capability() if level == "native" else level
    precision = str(build["precision"])
    if precision not in PRECISIONS:
        raise ConfigError(f"build.precision: {precision!r} is not one of {list(PRECISIONS)}")
    device = str(build["device"])
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"build.device: {device!r} is not 'cpu' or 'cuda'")
    if profile == "portable" and (precision != "fp32" or level != "default" or bool(build["mkldnn"])):
        raise ConfigError(
            "build.profile=portable needs build.precision=fp32, build.cpu_capability=default and build.mkldnn=false"
        )
    world_size = int(build["world_size"])
    if world_size < 1:
        raise ConfigError(f"build.world_size: expected >= 1, got {world_size}")
    cbwr = build["mkl_cbwr"]
    return Pins(
        profile=profile, device=device, threads=threads, cpu_capability=level, precision=precision,
        seed=int(seed), world_size=world_size, deterministic=bool(build["deterministic"]),
        mkldnn=bool(build["mkldnn"]), mkl_cbwr=None if cbwr is None else str(cbwr),
    )


def pinned_environ(pins: Pins, base: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment a build runs under: the shell's knobs replaced by the pins."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in SHELL_KNOBS}
    env["ATEN_CPU_CAPABILITY"] = pins.cpu_capability
    env["OMP_NUM_THREADS"] = str(pins.threads)
    env["MKL_NUM_THREADS"] = str(pins.threads)
    env["PYTHONHASHSEED"] = "0"
    if pins.mkl_cbwr:
        env["MKL_CBWR"] = pins.mkl_cbwr
    if pins.device == "cuda":
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    env["HF_DATASETS_OFFLINE"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    return env


def apply_process_env(pins: Pins) -> None:
    """Set the pinned variables in this process; must run before torch is imported."""
    wanted = pinned_environ(pins)
    for k in SHELL_KNOBS:
        if k not in wanted:
            os.environ.pop(k, None)
    for k, v in wanted.items():
        if k in SHELL_KNOBS or k.startswith("HF_"):
            os.environ[k] = v


def target_packages(resolved: dict[str, Any]) -> tuple[str, ...]:
    """Distributions that the config's `_target_`s import from, beyond the recorded ones.

    A model built from `transformers.GPT2LMHeadModel` has its bits decided by the
    transformers version too, so that version joins the lock; repro itself is
    recorded as code. Read from the config, so no torch import is needed.
    """
    roots: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and target:
                roots.add(target.split(".", 1)[0])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(resolved)
    dists = metadata.packages_distributions()
    names = {d for r in roots - {"repro"} for d in dists.get(r, [])}
    return tuple(sorted(n for n in names if n.lower() not in {p.lower() for p in RECORDED_PACKAGES}))


def package_versions(names: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str]:
    """Installed versions, read from metadata so that torch is not imported."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
