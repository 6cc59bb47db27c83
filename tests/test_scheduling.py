"""The suite's own order (tests/scheduling.py): shared module fixtures stay on one worker, longest first."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import scheduling


@dataclass
class FixtureDef:
    scope: str
    baseid: str


@dataclass
class Item:
    """The few attributes of a pytest.Item that scheduling reads."""

    nodeid: str
    fixtures: dict[str, FixtureDef] = field(default_factory=dict)
    slow: bool = False
    markers: list[Any] = field(default_factory=list)

    @property
    def _fixtureinfo(self) -> Any:
        return type("Info", (), {"name2fixturedefs": {k: [v] for k, v in self.fixtures.items()}})()

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name == "slow" and self.slow else None

    def add_marker(self, marker: Any) -> None:
        self.markers.append(marker)


def test_units_go_longest_first_and_a_shared_module_fixture_keeps_its_tests_together() -> None:
    trained = {"trained": FixtureDef("module", "tests/test_a.py"), "tmp_path": FixtureDef("function", "")}
    items = [Item("tests/test_a.py::one", trained), Item("tests/test_a.py::alone"),
             Item("tests/test_a.py::two", trained), Item("tests/test_b.py::long"),
             Item("tests/test_b.py::new_and_slow", slow=True), Item("tests/test_b.py::new")]
    durations = {"tests/test_a.py::one": 9.0, "tests/test_a.py::two": 2.0, "tests/test_a.py::alone": 1.0,
                 "tests/test_b.py::long": 10.0}
    scheduling.order(items, durations)  # type: ignore[arg-type]
    assert [i.nodeid for i in items] == [
        "tests/test_a.py::one", "tests/test_a.py::two",  # 11 s together, in file order
        "tests/test_b.py::long", "tests/test_b.py::new_and_slow",  # 10 s; unknown slow counts DEFAULT_SLOW (8 s)
        "tests/test_a.py::alone", "tests/test_b.py::new"]
    grouped = {i.nodeid: [m.args for m in i.markers if m.name == "xdist_group"] for i in items}
    assert grouped["tests/test_a.py::one"] == grouped["tests/test_a.py::two"] == [("fixture-tests/test_a.py",)]
    assert grouped["tests/test_a.py::alone"] == [] and grouped["tests/test_b.py::long"] == []


def test_stored_durations_add_the_phases_and_drop_the_group_suffix(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    scheduling.write_durations([("tests/t.py::a@fixture-tests/t.py", 1.0), ("tests/t.py::a@fixture-tests/t.py", 0.26),
                                ("tests/t.py::b[x@y]", 0.04)], path)
    assert scheduling.load_durations(path) == {"tests/t.py::a": 1.3, "tests/t.py::b[x@y]": 0.0}
    assert scheduling.load_durations(tmp_path / "missing.json") == {}


@pytest.mark.parametrize(("node_id", "plain"), [("a.py::t@fixture-a.py", "a.py::t"), ("a.py::t[1@2]", "a.py::t[1@2]")])
def test_plain_node_id(node_id: str, plain: str) -> None:
    assert scheduling.plain_node_id(node_id) == plain
