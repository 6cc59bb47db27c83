"""verify's rebuild: train again in a fresh process under the lock's pins alone.

The lock becomes a `BuildSpec` (`spec_from_lock`) and goes through the same
`launch` as `repro train` (`rebuild_options`: how its child runs); the child runs
the same `build`, importing only the project files the lock hashes (as hashed; any
with `trust_code`), after judging the trust gate's targets on the imported objects.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from repro.builder.child import ChildOptions
from repro.builder.cpu_match import recorded_cpu
from repro.builder.sandbox import Sandbox
from repro.builder.spec import BuildSpec, Gate, make_spec, with_pins
from repro.environment.pins import Pins
from repro.lock.lockdiff import PIN_KEYS
from repro.lock.types import Lock
from repro.source.composed import ConfigFiles


def rebuild_config(lock: Lock, world_size: int | None = None) -> tuple[dict[str, Any], Pins]:
    """The lock's resolved config with its build section's pins written in (`with_pins`), and those pins
    (another world size, when the user asks for one)."""
    build: dict[str, Any] = dict(lock["build"])  # read by pin name
    if world_size is not None:
        build["world_size"] = world_size
    pins = Pins(**{key: build[key] for key in PIN_KEYS})
    return with_pins(lock["inputs"]["config"]["resolved"], pins), pins


def spec_from_lock(lock: Lock, root: Path, out_dir: Path, *, quiet: bool, world_size: int | None = None,
                   gate: tuple[Gate, ...] = (), trust_code: bool = False) -> BuildSpec:
    """The build a lock records, as a spec: its config and pins, its recorded code files as the config's
    code (a rebuild composes nothing), and what the child must check before it trains."""
    from repro.builder.gate import served_code

    resolved, _ = rebuild_config(lock, world_size)
    recorded = tuple(f["path"] for f in lock["inputs"]["code"]["files"])
    spec = make_spec(resolved, root, out_dir, config=ConfigFiles(code=recorded), quiet=quiet)
    cpu = recorded_cpu(lock)
    return replace(spec, gate=gate, served=None if trust_code else served_code(lock),
                   expect_cpu=None if cpu is None else {**cpu})


def rebuild_options(python: Path | None, sandbox: Sandbox) -> ChildOptions:
    """How a rebuild's child runs: errors start with "rebuild", a datasets cache of its own (no stale cache
    can stand in for the data), another toolchain's interpreter when one was recreated, inside the sandbox."""
    return ChildOptions(what="rebuild", own_cache=True, python=None if python is None else str(python),
                        prefix=sandbox.prefix)
