"""`repro verify --toolchain recreate`: install the lock's toolchain in a fresh environment. No torch.

Debian's rebuilders install exactly the toolchain a `.buildinfo` names before
they rebuild; this does the same for a lock's `toolchain` section:

1. an isolated virtual environment, cached by the toolchain's digest in the
   user's cache folder (`$REPRO_TOOLCHAIN_CACHE`, else `$XDG_CACHE_HOME/repro/
   toolchains`, else `~/.cache/repro/toolchains`), so a second verify reuses it;
2. every recorded distribution at its recorded version (torch with its build tag,
   e.g. `torch==2.13.0+cpu`) plus `repro==<version>`, installed with `uv` when it
   is on the PATH or beside this interpreter, else with `pip`. uv does not read
   pip's configuration, so pip's find-links and index URLs are passed to it
   explicitly (and pip's best-match-across-indexes strategy), with any
   `--find-links DIR` given (wheels on no index); repro's own wheel, when the lock's
   repro is the one installed here, is found or built from this installation
   (`repro.verify.own_wheel`), so an unreleased repro needs no --find-links;
3. checked: the installed torch build and repro's compiler digest must be the
   recorded ones, or this is not the toolchain (exit 3).

Anything that cannot be installed is exit 3, naming the package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from repro.canonical import atomic_write_json, compact_json, sha256_bytes
from repro.environment.machine import user_cache
from repro.errors import EnvironmentMismatch
from repro.lock.types import Toolchain
from repro.records import JsonObject
from repro.source.hashing import hash_files, root_digest
from repro.verify.own_wheel import own_wheel_dir

MARKER = "repro-toolchain.json"
_PIP_KEYS = ("find-links", "index-url", "extra-index-url")
_NOT_FOUND = (re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-]+)"),
              re.compile(r"Because ([A-Za-z0-9_.\-]+)(?:==\S+)? was not found"),
              re.compile(r"Because there is no version of ([A-Za-z0-9_.\-]+)"),
              re.compile(r"Could not find a version that satisfies the requirement ([A-Za-z0-9_.\-]+)"))


@dataclass(frozen=True)
class Provisioned:
    """The environment a rebuild runs in, and how it was had."""

    python: Path
    path: Path
    installer: str
    cached: bool
    seconds: float

    def to_json(self) -> JsonObject:
        return {"mode": "recreate", "python": str(self.python), "path": str(self.path), "installer": self.installer,
                "cached": self.cached, "seconds": round(self.seconds, 3)}


def toolchain_digest(toolchain: Toolchain) -> str:
    """What identifies an installed toolchain: interpreter, distributions, torch build, repro's compiler."""
    key = {"python": toolchain["python"], "distributions": toolchain["distributions"],
           "torch": None if toolchain["torch"] is None else toolchain["torch"]["version"],
           "repro": toolchain["repro"]["version"],
           "compiler": toolchain["repro"]["root_digest"]}
    return sha256_bytes(compact_json(key))


def cache_root() -> Path:
    """Where recreated toolchains live (see the module docstring)."""
    return user_cache("toolchains", "REPRO_TOOLCHAIN_CACHE")


def requirements(toolchain: Toolchain) -> list[str]:
    """`name==version` for every recorded distribution, torch with its build tag, and repro."""
    reqs = {name: f"{name}=={version}" for name, version in toolchain["distributions"].items()}
    if toolchain["torch"] is not None:
        reqs["torch"] = f"torch=={toolchain['torch']['version']}"
    reqs["repro"] = f"repro=={toolchain['repro']['version']}"
    return [reqs[k] for k in sorted(reqs, key=str.lower)]


def find_uv() -> str | None:
    """uv on the PATH, or beside this interpreter; None for pip (also when REPRO_TOOLCHAIN_INSTALLER=pip)."""
    if os.environ.get("REPRO_TOOLCHAIN_INSTALLER") == "pip":
        return None
    beside = Path(sys.executable).parent / "uv"
    return shutil.which("uv") or (str(beside) if beside.is_file() else None)


def pip_index_options() -> list[str]:
    """pip's own find-links and index settings (`pip config list`), as options uv understands."""
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    options: list[str] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rpartition(".")[2]
        if name in _PIP_KEYS:
            for item in value.strip().strip("'\"").split():
                option = [f"--{name}", item]
                if item and not _contains(options, option):
                    options += option
    return options


def _contains(options: list[str], pair: list[str]) -> bool:
    return any(options[i:i + 2] == pair for i in range(0, len(options), 2))


def provision(toolchain: Toolchain, find_links: list[Path], quiet: bool = True) -> Provisioned:
    """The recorded toolchain, installed (or found cached) and checked; raise EnvironmentMismatch if not possible."""
    started = time.monotonic()
    digest = toolchain_digest(toolchain)
    path = cache_root() / digest[:24]
    python = path / "bin" / "python"
    uv = find_uv()
    if (path / MARKER).is_file() and python.is_file():
        check_installed(toolchain, python)
        return Provisioned(python, path, json.loads((path / MARKER).read_text())["installer"], True,
                           time.monotonic() - started)
    if path.exists():  # an earlier attempt died half-way: start over
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    own = own_wheel_dir(toolchain["repro"]["version"], cache_root().parent / "wheels")
    links = [opt for d in [*find_links, *([own] if own else [])] for opt in ("--find-links", str(Path(d).resolve()))]
    if uv:
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(path)], "create the environment", quiet)
        # pip picks the best match across all its indexes; uv, unless told, only from the first one that has
        # the name (a local mirror holding another version of a package would then make it "not found").
        _run([uv, "pip", "install", "--python", str(python), "--index-strategy", "unsafe-best-match", *links,
              *pip_index_options(), *requirements(toolchain)], "install the toolchain", quiet)
    else:
        _run([sys.executable, "-m", "venv", str(path)], "create the environment", quiet)
        _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *links, *requirements(toolchain)],
             "install the toolchain", quiet)
    check_installed(toolchain, python)
    atomic_write_json(path / MARKER, {"digest": digest, "installer": "uv" if uv else "pip",
                                      "requirements": requirements(toolchain)})
    return Provisioned(python, path, "uv" if uv else "pip", False, time.monotonic() - started)


def _run(cmd: list[str], what: str, quiet: bool) -> None:
    # No PYTHONPATH: pip would count a repro (or anything) importable from it as already installed.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, env=env)
    if proc.returncode == 0:
        return
    output = proc.stdout + proc.stderr
    for pattern in _NOT_FOUND:
        m = pattern.search(output)
        if m:
            hint = " (this repro is another version: build the lock's with `pip wheel --no-deps SOURCE`)" \
                if m.group(1).lower() == "repro" else ""
            raise EnvironmentMismatch(f"--toolchain recreate: cannot {what}: package {m.group(1)} is not installable "
                                      f"here (pass --find-links DIR with its wheel{hint}, or verify with "
                                      "--toolchain current)")
    last = [ln.strip() for ln in output.splitlines() if ln.strip()][-1:] or ["no output"]
    raise EnvironmentMismatch(f"--toolchain recreate: cannot {what} ({cmd[0]} exit {proc.returncode}): {last[0]}")


_PROBE = ("import importlib.metadata as m, json, os, repro; "
          "print(json.dumps({'torch': m.version('torch'), 'repro': os.path.dirname(os.path.dirname(repro.__file__))}))")


def check_installed(toolchain: Toolchain, python: Path) -> None:
    """The environment holds the recorded torch build and repro's recorded compiler (exit 3 if not)."""
    proc = subprocess.run([str(python), "-I", "-c", _PROBE], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
        raise EnvironmentMismatch(f"--toolchain recreate: the environment at {python.parent.parent} is unusable: "
                                  f"{tail[0]}")
    found = json.loads(proc.stdout)
    torch = toolchain["torch"]
    if torch is not None and found["torch"] != torch["version"]:
        raise EnvironmentMismatch(f"--toolchain recreate: torch {found['torch']} was installed, the lock records "
                                  f"{torch['version']} (another build); pass --find-links with the recorded wheel")
    recorded = toolchain["repro"]
    base = Path(found["repro"])
    missing = [f["path"] for f in recorded["files"] if not (base / f["path"]).is_file()]
    digests = hash_files(base, [f["path"] for f in recorded["files"] if f["path"] not in missing])
    if missing or root_digest(digests) != recorded["root_digest"]:
        theirs = {f["path"]: f["hashes"]["sha256"] for f in recorded["files"]}
        differ = missing + [d.path for d in digests if theirs[d.path] != d.sha256]
        raise EnvironmentMismatch(f"--toolchain recreate: the installed repro {recorded['version']} is not the "
                                  f"compiler the lock records ({', '.join(differ[:3])} differ); install the "
                                  "recorded repro with --find-links DIR")
