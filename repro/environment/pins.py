"""The pins that decide the bits: resolved from config, recorded, compared. No torch.

Resolving happens before torch is imported because `ATEN_CPU_CAPABILITY` is read
once, at torch's first dispatch. `repro.train.determinism` applies the torch-side flags.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from typing import Any, cast, get_args, get_type_hints

from repro.environment.installed import distributions_by_module
from repro.environment.machine import cpu_flags, machine_cores
from repro.errors import ConfigError, EnvironmentMismatch
from repro.records import PinRecord

# What a build process inherits from the shell that started it: where things
# are (paths, caches, the terminal), who runs it, and what a launcher (torchrun,
# accelerate) tells each rank. Everything else is dropped; the pins then set
# every variable that can decide a bit (`pinned_variables`). docs/environment.md
# has the measured table of which variables change the weights.
ALLOWED_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TEMP", "TMP", "SYSTEMROOT", "TERM", "COLUMNS", "LINES",
    "NO_COLOR", "XDG_CACHE_HOME", "HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_CACHE", "TORCH_HOME",
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
    "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_ERROR_FILE",
)
# repro's own settings (REPRO_CACHE_DIR, ...) pass too; none of them decides a bit.
ALLOWED_PREFIXES = ("REPRO_",)
# Variables that can decide a bit (or say how a launcher runs torch): never in
# ALLOWED_ENV, so no build inherits them; `repro check` drops them too.
SHELL_KNOBS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_CBWR", "OMP_DYNAMIC", "MKL_DYNAMIC",
    "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "KMP_AFFINITY", "GOMP_CPU_AFFINITY", "OMP_PROC_BIND",
    "OMP_PLACES", "ATEN_CPU_CAPABILITY", "CUBLAS_WORKSPACE_CONFIG", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
    "PYTHONHASHSEED", "ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_CPU",
)
# Python's hash seed: fixed, so a model built by iterating over a set of strings
# gets the same layers in every process. Recorded in the lock (build.env).
HASH_SEED = "0"

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
# Bounds on pins a stranger's lock may ask for (docs/security.md, "Caps").
MAX_WORLD_SIZE = 1024  # processes one build may start
OVERSUBSCRIBE = 4  # threads per core a rebuild may start without --allow-oversubscribe
# The profiles (repro/configs/build/): `default` promises the same bits on every x86-64 CPU with AVX2
# (repro's portable kernels, docs/portable.md); `native` is torch's own kernels, as fast as this CPU
# allows and tied to its vendor and model, which the lock records (build.cpu).
PROFILES = ("default", "native")
KERNELS = ("portable", "vendor")  # repro's fixed-order CPU kernels, or torch's MKL/oneDNN ones
UNPORTABLE = ("refuse", "record")  # an operator the portable kernels cannot cover: exit 3, or run and record
PORTABLE_LEVELS = ("avx2", "default")  # ATen levels that every x86-64 CPU with AVX2 runs alike


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
    kernels: str
    unportable: str

    def to_json(self) -> PinRecord:
        return cast(PinRecord, asdict(self))  # PinRecord repeats these fields (tests/test_lockfile.py)


# The pin names: Pins' fields, the one list (a lock's pins, `repro diff`'s, verify's). Everything that
# names the pins derives from it; tests/test_single_source.py checks the lists that cannot.
PIN_KEYS = tuple(f.name for f in fields(Pins))
# The `build` group's keys: every pin but the seed, which is the config's top-level `seed`.
BUILD_KEYS = tuple(k for k in PIN_KEYS if k != "seed")
# What a `build` key may be in a config besides its pin's type: `threads: auto` (this machine's cores).
CONFIG_SPELLINGS: dict[str, type] = {"threads": str}


def build_value_types() -> dict[str, type | tuple[type, ...]]:
    """The type each `build` key's config value must have: its pin's type, or a spelling `resolve_pins` resolves."""
    hints = get_type_hints(Pins)
    out: dict[str, type | tuple[type, ...]] = {}
    for key in BUILD_KEYS:
        kinds = (*(get_args(hints[key]) or (hints[key],)), *filter(None, [CONFIG_SPELLINGS.get(key)]))
        out[key] = kinds[0] if len(kinds) == 1 else kinds
    return out


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
    missing = [k for k in BUILD_KEYS if k not in build]
    if missing:
        raise ConfigError(f"config key build.{missing[0]}: missing")
    profile = _one_of(build, "profile", PROFILES)
    threads = build["threads"]
    threads = machine_cores() if threads == "auto" else threads
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ConfigError(f"build.threads: expected a positive integer or 'auto', got {build['threads']!r}")
    level = str(build["cpu_capability"])
    level = native_capability() if level == "native" else level
    world_size = build["world_size"]
    if not isinstance(world_size, int) or isinstance(world_size, bool) or not 1 <= world_size <= MAX_WORLD_SIZE:
        raise ConfigError(f"build.world_size: expected an integer from 1 to {MAX_WORLD_SIZE}, got {world_size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"config key seed: expected an integer, got {seed!r}")
    cbwr = build["mkl_cbwr"]
    pins = Pins(
        profile=profile, device=_one_of(build, "device", ("cpu", "cuda")), threads=threads, cpu_capability=level,
        precision=_one_of(build, "precision", PRECISIONS), seed=int(seed), world_size=world_size,
        deterministic=bool(build["deterministic"]), mkldnn=bool(build["mkldnn"]),
        mkl_cbwr=None if cbwr is None else str(cbwr), kernels=_one_of(build, "kernels", KERNELS),
        unportable=_one_of(build, "unportable", UNPORTABLE),
    )
    check_profile(pins)
    return pins


def _one_of(build: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = build[key]
    if value not in allowed:
        raise ConfigError(f"build.{key}: {value!r} is not one of {list(allowed)}")
    return str(value)


def check_profile(pins: Pins) -> None:
    """A profile's promise holds only with its pins: refuse a combination that would break it (exit 2)."""
    if pins.profile == "native":
        if pins.kernels != "vendor":
            raise ConfigError("build.profile=native needs build.kernels=vendor (torch's own kernels); "
                              "build=default is the profile with repro's portable kernels")
        return
    if pins.kernels != "portable":
        raise ConfigError("build.profile=default with build.kernels=vendor: torch's MKL and oneDNN kernels give "
                          "other bits on another CPU vendor or model; use build=native to train with them")
    if pins.device != "cpu":
        return
    if pins.cpu_capability not in PORTABLE_LEVELS:
        raise ConfigError(f"build.profile=default with build.cpu_capability={pins.cpu_capability}: only "
                          f"{' or '.join(PORTABLE_LEVELS)} run alike on every x86-64 CPU; use build=native for "
                          "this CPU's own level")
    if pins.mkldnn:
        raise ConfigError("build.profile=default with build.mkldnn=true: oneDNN picks its kernels by CPU; "
                          "set build.mkldnn=false, or use build=native")


def check_bounds(threads: int, world_size: int, allow_oversubscribe: bool = False) -> None:
    """Refuse pins that would start more threads or processes than this machine should (exit 2)."""
    if world_size > MAX_WORLD_SIZE:
        raise ConfigError(f"build.world_size: {world_size} is over the cap of {MAX_WORLD_SIZE} processes")
    cores = machine_cores()
    if threads * world_size > OVERSUBSCRIBE * cores and not allow_oversubscribe:
        raise ConfigError(f"build.threads: {threads} threads x {world_size} processes is over {OVERSUBSCRIBE}x this "
                          f"machine's {cores} cores; pass --allow-oversubscribe to start them anyway")


def pinned_variables(pins: Pins) -> dict[str, str]:
    """Every environment variable the pins set that can decide a bit; the lock records them (build.env)."""
    env = {
        "ATEN_CPU_CAPABILITY": pins.cpu_capability,
        "OMP_NUM_THREADS": str(pins.threads),
        "MKL_NUM_THREADS": str(pins.threads),
        "OMP_DYNAMIC": "FALSE",  # measured: OMP_DYNAMIC=true changes the digits weights
        "MKL_DYNAMIC": "FALSE",
        "PYTHONHASHSEED": HASH_SEED,
    }
    if pins.mkl_cbwr:
        env["MKL_CBWR"] = pins.mkl_cbwr
    if pins.device == "cuda":
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    return env


def pinned_environ(pins: Pins, base: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment a build process runs under: an allowlist of the shell, plus the pins.

    Locale and text encoding are fixed too (`C.UTF-8`, UTF-8 mode), and the hub is
    off: a build reads local files only.
    """
    shell = os.environ if base is None else base
    env = {k: v for k, v in shell.items() if k in ALLOWED_ENV or k.startswith(ALLOWED_PREFIXES)}
    env.update(pinned_variables(pins))
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", PYTHONUTF8="1", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    if pins.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif "CUDA_VISIBLE_DEVICES" in shell:
        env["CUDA_VISIBLE_DEVICES"] = shell["CUDA_VISIBLE_DEVICES"]
    return env


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
    dists = distributions_by_module()
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
