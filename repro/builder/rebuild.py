"""verify's rebuild: train again in a fresh process under the lock's pins alone.

The child (`repro.builder.child`) runs `repro.builder.build.rebuild_main`, the same
`run_build` that `repro train` uses.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from repro.builder.child import run_child
from repro.builder.cpu_match import recorded_cpu
from repro.builder.sandbox import Sandbox
from repro.environment.pins import Pins
from repro.lock.lockdiff import PIN_KEYS
from repro.lock.types import Lock
from repro.source.config import require


def rebuild_config(lock: Lock, world_size: int | None = None) -> tuple[dict[str, Any], Pins]:
    """The lock's resolved config with its build section's pins applied on top
    (and another world size, when the user asks for one)."""
    build: dict[str, Any] = dict(lock["build"])  # read by pin name
    if world_size is not None:
        build["world_size"] = world_size
    pins = Pins(**{key: build[key] for key in PIN_KEYS})
    resolved = copy.deepcopy(lock["inputs"]["config"]["resolved"])
    require(resolved, "build", dict).update({key: build[key] for key in PIN_KEYS if key != "seed"})
    resolved["seed"] = build["seed"]
    return resolved, pins


def run_rebuild(lock: Lock, root: Path, work_dir: Path, quiet: bool, world_size: int | None = None,
                python: Path | None = None, sandbox: Sandbox | None = None,
                env_extra: dict[str, str] | None = None, plan: list[tuple[str, str, str]] | None = None,
                trust_code: bool = False) -> Path:
    """Train again in a fresh interpreter under the lock's pins alone; return the rebuilt out_dir.

    The child (`repro.builder.child`) gets an environment made from the pins alone,
    imports the same repro whose source was just hashed (or, with `python`, the
    repro of a recreated toolchain), and a datasets cache of its own so no stale
    cache can stand in for the data. With `sandbox`, the child runs inside it;
    `env_extra` is added to its environment (verify --localize's op recorder). The child imports
    only the project files the lock hashes (as hashed; any with `trust_code`), and first judges
    the imported objects of `plan`, the trust gate's targets (gate.check_located).
    """
    from repro.builder.gate import served_code

    resolved, pins = rebuild_config(lock, world_size)
    out_dir = work_dir / "out"
    # The rebuild composes nothing: the recorded code files (config files among them) are its source.
    recorded = [f["path"] for f in lock["inputs"]["code"]["files"]]
    spec = {"resolved": resolved, "root": str(root), "out_dir": str(out_dir), "gate": plan or [],
            "served": None if trust_code else served_code(lock), "expect_cpu": recorded_cpu(lock),
            "config": {"files": [], "code": recorded}}
    run_child(spec, pins, work_dir,
              quiet=quiet, what="rebuild", own_cache=True, python=None if python is None else str(python),
              prefix=sandbox.prefix if sandbox is not None else (), env_extra=env_extra)
    return out_dir
