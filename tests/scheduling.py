"""The order the suite runs in, so that two xdist workers finish together.

Nearly all of the suite's time is real builds in subprocesses (~6 s of CPU
each, whatever the step count), so its length on CI's two cores is decided by
scheduling: a 100-second test that starts last runs on alone. The Makefile runs
`pytest -n auto --dist loadgroup`, which hands out one unit at a time, in
collection order, to whichever worker is nearly idle. conftest.py orders the
collection here:

1. Tests that share a module-scoped fixture (a trained release, a built
   project) form one unit, an `xdist_group`, so that the fixture is built on
   one worker only. Every other test is a unit of its own.
2. Units go out longest first (the LPT rule), by the seconds measured in
   tests/durations.json. `make test-durations` rewrites that file. A test it
   does not list counts as DEFAULT_SLOW or DEFAULT_FAST seconds: a stale file
   costs balance, never correctness.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from repro.canonical import atomic_write_json

DURATIONS = Path(__file__).resolve().parent / "durations.json"
DEFAULT_SLOW, DEFAULT_FAST = 8.0, 0.1
GROUP_PREFIX = "fixture-"  # xdist appends "@<group>" to a grouped test's node id


def load_durations(path: Path = DURATIONS) -> dict[str, float]:
    """Node id -> seconds; empty when the file is missing (a fresh suite still runs)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {str(k): float(v) for k, v in data.items()}


def shared_fixture_module(item: pytest.Item) -> str | None:
    """The test module whose module-scoped fixture this test uses, if any."""
    info = getattr(item, "_fixtureinfo", None)  # pytest's own record of the fixtures an item uses
    if info is None:
        return None
    for name in sorted(info.name2fixturedefs):
        definition = info.name2fixturedefs[name][-1]
        if definition.scope in ("module", "package") and definition.baseid.endswith(".py"):
            return str(definition.baseid)
    return None


def order(items: list[pytest.Item], durations: dict[str, float]) -> None:
    """Group tests that share a module fixture, then sort the units longest first (in place)."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        module = shared_fixture_module(item)
        if module is not None:
            item.add_marker(pytest.mark.xdist_group(GROUP_PREFIX + module))
        units.setdefault(module or item.nodeid, []).append(item)

    def seconds(unit: list[pytest.Item]) -> float:
        default = {True: DEFAULT_SLOW, False: DEFAULT_FAST}
        return sum(durations.get(i.nodeid, default[i.get_closest_marker("slow") is not None]) for i in unit)

    ranked = sorted(units.values(), key=seconds, reverse=True)  # stable: ties keep file order
    items[:] = [item for unit in ranked for item in unit]


def plain_node_id(node_id: str) -> str:
    """A report's node id without the "@group" suffix xdist adds under --dist loadgroup."""
    head, at, group = node_id.rpartition("@")
    return head if at and group.startswith(GROUP_PREFIX) else node_id


def write_durations(measured: Iterable[tuple[str, float]], path: Path = DURATIONS) -> None:
    """Store each test's setup + call + teardown seconds (one decimal; every test, so that a
    missing one is a new one), sorted by node id, atomically."""
    totals: dict[str, float] = {}
    for node_id, seconds in measured:
        plain = plain_node_id(node_id)
        totals[plain] = totals.get(plain, 0.0) + seconds
    atomic_write_json(path, {k: round(v, 1) for k, v in totals.items()})
