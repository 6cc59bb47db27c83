"""The toolchain that built a model: what ran, recorded apart from the source. No torch import.

Debian's `.buildinfo` records the exact compilers and libraries of a package
build, separately from its source; this is the same record for a model. It is
read from the build process itself, after training, so it names what actually
ran rather than a hand-picked list. The rule: *what the build process had
imported when its lock was written*. The build process is always the child that
`repro.builder.child` starts (`python -m repro.builder SPEC`): for `repro train`,
for verify's rebuild, and for each rank of `torchrun` or `accelerate launch`,
whose rank process starts its own child. A CLI, a launcher or config
composition runs in another process, so what they import never reaches the
record, and one build gives the same record whatever launched it:

- the Python implementation and version, the machine and its C library;
- every distribution that the process imported, with its version;
- torch's build: the local version tag and the CUDA, cuDNN, MKL and oneDNN
  versions that `torch.__config__` reports (read from the module already
  loaded; this module never imports torch);
- the C++ compiler that built repro's portable kernels, when the build loaded them;
- repro's *compiler*: its version and the repro modules that the build imported,
  minus the ones that cannot change a bit (CLI, commands, progress display, and
  trust: card, audit, signing, release terms). Their hashing lives with the
  other source hashing (`repro.source.inputs.compiler_block`).
"""

from __future__ import annotations

import platform
import re
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from repro.environment.installed import distributions_by_module
from repro.records import InterpreterFacts, KernelToolchain, ToolchainFacts, TorchFacts

PACKAGE_DIR = Path(__file__).resolve().parent.parent

# repro modules that never decide a bit: how a build is asked for, checked, stopped and
# reported, not how it is made (the CLI, progress display, signal handling, verify's and
# check's orchestration and hints, the config schema and signature checks that only refuse, and
# trust: card, audit, signing, release terms). A build
# process imports some of them; their edits still leave every lock and verify unchanged. The two
# `__main__` entry points run as `__main__`, never under their own names, so a build could not
# record them anyway; the build child's parses argv, sets its signal handlers and pauses garbage
# collection. The console script's `repro._entry` only takes the current folder off the path; the
# gate's `repro.builder.definitions` reads source to judge it, in verify alone.
NOT_COMPILER = ("repro.__main__", "repro._entry", "repro.builder.__main__", "repro.lifetime", "repro.cli",
                "repro.commands", "repro.progress", "repro.trust", "repro.scaffold", "repro.verify", "repro.check",
                "repro.builder.rebuild", "repro.builder.sandbox", "repro.builder.cpu_match", "repro.builder.gate",
                "repro.builder.definitions", "repro.builder.clone", "repro.train.opdiff", "repro.lock.explain",
                "repro.source.schema", "repro.source.targets")
# Files that can be compiler sources: Python modules, and the C++ of repro's portable kernels.
SOURCE_SUFFIXES = (".py", ".cpp", ".h")
# Modules that interpreter start-up imports through `.pth` hooks, not the build.
STARTUP_HOOKS = ("_distutils_hack", "__editable__", "_virtualenv")

_MKL = re.compile(r"Math Kernel Library Version (\S+?)(?:-Product)? Build (\d+)")
_ONEDNN = re.compile(r"(?:MKL-DNN|oneDNN) v(\S+) \(Git Hash (\w+)\)")
_COMMIT = re.compile(r"COMMIT_SHA=(\w+)")


def is_compiler_module(name: str) -> bool:
    """Whether repro module `name` is part of the compiler (can decide the bits)."""
    if name != "repro" and not name.startswith("repro."):
        return False
    return not any(name == p or name.startswith(p + ".") for p in NOT_COMPILER)


def compiler_files(modules: Mapping[str, ModuleType | None] | None = None) -> list[str]:
    """The compiler: the source files of the repro modules loaded in this process.

    Paths are relative to the folder holding the `repro` package, sorted by their
    UTF-8 bytes (the order the lock keeps).
    """
    modules = sys.modules if modules is None else modules
    base = PACKAGE_DIR.parent
    found = set()
    for name, module in list(modules.items()):
        path = getattr(module, "__file__", None)
        if not is_compiler_module(name) or not path:
            continue
        file = Path(path).resolve()
        if file.suffix == ".py" and PACKAGE_DIR in file.parents:
            found.add(file.relative_to(base).as_posix())
            # Non-Python sources the module compiles (repro.train.kernels: its C++), beside its file.
            for extra in getattr(module, "__compiler_sources__", ()):
                found.add((file.parent / extra).relative_to(base).as_posix())
    return sorted(found, key=lambda s: s.encode("utf-8"))


def compiler_sources() -> list[str]:
    """Every repro source file that can be part of the compiler, whatever a build imports.

    The superset that `compiler_files` picks from; `scripts/compiler_fingerprint.py`
    and its test hold repro's version to it (a change here needs a version bump).
    """
    base = PACKAGE_DIR.parent
    out = []
    for file in PACKAGE_DIR.rglob("*"):
        rel = file.relative_to(base)
        if file.suffix not in SOURCE_SUFFIXES or "__pycache__" in rel.parts:
            continue
        parts = list(rel.with_suffix("").parts)
        if file.suffix != ".py" or parts[-1] == "__init__":  # C++ belongs to the package it sits in
            parts.pop()
        if is_compiler_module(".".join(parts)):
            out.append(rel.as_posix())
    return sorted(out, key=lambda s: s.encode("utf-8"))


def imported_distributions(modules: Mapping[str, ModuleType | None] | None = None) -> dict[str, str]:
    """Every installed distribution that this process imported from, name -> version.

    repro itself is left out (it is recorded as the compiler), and so are the
    `.pth` hooks that interpreter start-up runs whatever the build does.
    """
    modules = sys.modules if modules is None else modules
    owners = distributions_by_module()
    tops = {name.partition(".")[0] for name in list(modules)}
    names: set[str] = set()
    for top in tops:
        if top == "repro" or top.startswith(STARTUP_HOOKS):
            continue
        names.update(owners.get(top, ()))
    out = {}
    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # metadata for a name with no installed record
            continue
        canonical = str(dist.metadata["Name"] or name)
        if canonical.lower().replace("_", "-") != "repro":
            out[canonical] = dist.version
    return dict(sorted(out.items(), key=lambda kv: kv[0].lower()))


def installed_versions(names: list[str]) -> dict[str, str | None]:
    """Versions installed here for these distribution names (None: not installed). No import."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def torch_facts(modules: Mapping[str, ModuleType | None] | None = None) -> TorchFacts | None:
    """torch's build, read from the torch this process already loaded (None if it loaded none)."""
    modules = sys.modules if modules is None else modules
    torch: Any = modules.get("torch")
    if torch is None:
        return None
    version = str(torch.__version__)
    shown = str(torch.__config__.show())
    mkl, onednn, commit = _MKL.search(shown), _ONEDNN.search(shown), _COMMIT.search(shown)
    cudnn = None
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except (AttributeError, RuntimeError):  # a build without cuDNN support compiled in
        cudnn = None
    return {
        "version": version,
        "build": version.partition("+")[2] or None,
        "commit": commit.group(1) if commit else None,
        "cuda": torch.version.cuda,
        "cudnn": None if cudnn is None else str(cudnn),
        "mkl": f"{mkl.group(1)} build {mkl.group(2)}" if mkl else None,
        "onednn": f"{onednn.group(1)} ({onednn.group(2)[:12]})" if onednn else None,
    }


def interpreter_facts() -> InterpreterFacts:
    """Python implementation and version; the machine and its C library."""
    libc, libc_version = platform.libc_ver()
    return {
        "python": {"implementation": platform.python_implementation(), "version": platform.python_version()},
        "platform": {"system": platform.system(), "machine": platform.machine(),
                     "libc": f"{libc} {libc_version}".strip() or None},
    }


def kernel_facts(modules: Mapping[str, ModuleType | None] | None = None) -> KernelToolchain | None:
    """The C++ compiler of repro's portable kernels, if this process loaded them (None otherwise)."""
    modules = sys.modules if modules is None else modules
    kernels: Any = modules.get("repro.train.kernels")
    version = None if kernels is None else kernels.compiler_version()
    return None if version is None else {"cxx": str(version)}


def record(modules: Mapping[str, ModuleType | None] | None = None) -> ToolchainFacts:
    """The lock's `toolchain` section, less `repro` (the caller hashes the compiler files). `kernels` is there
    only when the process loaded repro's portable kernels (a stage or a native build never does)."""
    kernels = kernel_facts(modules)
    interpreter = interpreter_facts()
    facts: ToolchainFacts = {"python": interpreter["python"], "platform": interpreter["platform"],
                             "distributions": imported_distributions(modules), "torch": torch_facts(modules)}
    if kernels is not None:
        facts["kernels"] = kernels
    return facts
