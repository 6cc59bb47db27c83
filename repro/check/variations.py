"""`repro check`'s variations: each changes one condition a stranger's rebuild could differ in.

Like Debian's reprotest, a variation is one axis (a noisy shell, one core,
another path, another hash seed, a kill and resume, another profile, another
world size, another CPU model under qemu-user) and what was varied, in words.
Which variations a build's profile promises to survive is decided here too.
`repro.check.runs` runs them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from repro.check.emulate import QEMU_CPUS, qemu_missing
from repro.check.project import Project

AXES = ("again", "shell", "cores", "path", "hashseed", "resume", "profile", "world", "cpu")
REPORT_ONLY = ("profile", "world")  # never promised: another optimizer, another reduction order
# A noisy shell: thread counts, ISA limits and dynamic threads for every library torch may use.
NOISY_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_DYNAMIC": "true",
    "MKL_DYNAMIC": "true", "ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "MKL_CBWR": "AUTO", "DNNL_MAX_CPU_ISA": "SSE41", "ONEDNN_MAX_CPU_ISA": "SSE41", "KMP_AFFINITY": "scatter",
    "OMP_PROC_BIND": "true", "TZ": "Pacific/Chatham", "TERM": "dumb", "COLUMNS": "37",
}


@dataclass(frozen=True)
class Variation:
    """One condition changed from the baseline."""

    axis: str
    name: str
    what: str  # what was varied, in words
    env: tuple[tuple[str, str], ...] = ()
    prefix: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    relocate: bool = False
    interrupt: bool = False
    umask: int = 0o022
    qemu: bool = False


def locale_name() -> str:
    """A locale unlike the baseline's C.UTF-8: Turkish (dotless i) where installed, else POSIX."""
    try:
        names = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout.split()
    except OSError:
        names = []
    return next((n for n in names if n.lower().startswith("tr_tr")), "POSIX")


def variations(project: Project, axes: tuple[str, ...]) -> list[Variation]:
    """The variations of the requested axes that this machine can run, in AXES order."""
    out: list[Variation] = []
    for axis in axes:
        name, _, model = axis.partition(":")  # cpu:Icelake-Server runs that one emulated CPU model
        out += cpu_variations(project, (model,)) if name == "cpu" and model else _MAKERS[name](project)
    return out


def _again(project: Project) -> list[Variation]:
    return [Variation("again", "same again", "nothing varied: a second build in the baseline's conditions")]


def _shell(project: Project) -> list[Variation]:
    loc = locale_name()
    env = {**NOISY_ENV, "LC_ALL": loc, "LANG": loc}
    what = ", ".join(f"{k}={v}" for k, v in sorted(env.items())) + ", umask 077"
    return [Variation("shell", "noisy shell", what, tuple(sorted(env.items())), umask=0o077)]


def _cores(project: Project) -> list[Variation]:
    if shutil.which("taskset") is None:
        return [Variation("cores", "one core", "skipped: taskset is not installed")]
    return [Variation("cores", "one core", "taskset -c 0", prefix=("taskset", "-c", "0"))]


def _path(project: Project) -> list[Variation]:
    return [Variation("path", "another path", "the project copied to another absolute path and run from there",
                      relocate=True)]


def _hashseed(project: Project) -> list[Variation]:
    return [Variation("hashseed", "hash seed", "PYTHONHASHSEED=12345", (("PYTHONHASHSEED", "12345"),))]


def _resume(project: Project) -> list[Variation]:
    k = max(1, project.steps // 2)
    return [Variation("resume", "kill and resume", f"SIGKILL after the checkpoint of step {k}, then the same "
                      "command again", overrides=(f"trainer.checkpoint_every={k}",), interrupt=True)]


def _profile(project: Project) -> list[Variation]:
    """The other profile: native against the default (same config, torch's own kernels), or the reverse."""
    other = "default" if str(project.resolved["build"]["profile"]) == "native" else "native"
    return [Variation("profile", f"{other} profile", f"build={other}", overrides=(f"build={other}",))]


def _world(project: Project) -> list[Variation]:
    return [Variation("world", "world_size 2", "build.world_size=2 (two processes, gloo on CPU)",
                      overrides=("build.world_size=2",))]


def cpu_variations(project: Project, models: tuple[str, ...] = QEMU_CPUS) -> list[Variation]:
    missing = qemu_missing()
    if missing is not None:
        return [Variation("cpu", f"{m} (qemu)", f"skipped: {missing}") for m in models]
    return [Variation("cpu", f"{m} (qemu)", f"qemu-x86_64 -cpu {m}", prefix=(m,), qemu=True) for m in models]


_MAKERS: dict[str, Callable[[Project], list[Variation]]] = {
    "again": _again, "shell": _shell, "cores": _cores, "path": _path, "hashseed": _hashseed, "resume": _resume,
    "profile": _profile, "world": _world, "cpu": cpu_variations,
}
BASELINE = Variation("baseline", "baseline", "a clean shell: C.UTF-8, TZ=UTC, PYTHONHASHSEED=0, umask 022")


def promised(variation: Variation, profile: str) -> bool:
    """Whether the build's profile promises the same bits under this variation."""
    if variation.axis in REPORT_ONLY:
        return False
    return variation.axis != "cpu" or profile == "default"
