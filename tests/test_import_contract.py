""".importlinter places every top-level module and package of repro in a layer.

import-linter checks only the modules a contract names: a new package left out of the
layers could import anything, from anywhere, and `lint-imports` would still pass.
"""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _layered() -> list[str]:
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter", encoding="utf-8")
    layers = config["importlinter:contract:layers"]["layers"].split("\n")
    return [name.strip() for layer in layers if layer.strip() for name in layer.split("|")]


def _top_level() -> set[str]:
    package = REPO / "repro"
    found = {f"repro.{p.stem}" for p in package.glob("*.py") if p.name != "__init__.py"}
    return found | {f"repro.{p.parent.name}" for p in package.glob("*/__init__.py")}


def test_every_top_level_module_and_package_is_in_one_layer() -> None:
    layered = _layered()
    assert sorted(set(layered)) == sorted(layered), "a module named in two layers"
    assert sorted(_top_level() - set(layered)) == [], "add it to the layers contract in .importlinter"
    assert sorted(set(layered) - _top_level()) == [], "a layer names a module that is not there"
