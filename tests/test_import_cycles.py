"""scripts/check_import_cycles.py: a cycle hidden in a function still fails; an acyclic package passes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "check_import_cycles.py"


def _package(root: Path, files: dict[str, str]) -> Path:
    """A package `pkg` under `root` with the given files (and an empty `__init__.py` in each folder)."""
    pkg = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return pkg


def _check(pkg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(pkg)], capture_output=True, text=True, timeout=60)


def test_a_function_level_cycle_fails_with_its_chain(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "lock/a.py": "from pkg.lock.b import g\n\ndef f():\n    return g()\n",
        "lock/b.py": "def g():\n    from . import c\n    return c.h()\n",
        "lock/c.py": "def h():\n    from ..lock.a import f\n    return f\n",
    })
    done = _check(pkg)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "  pkg.lock.a -> pkg.lock.b -> pkg.lock.c -> pkg.lock.a\n" in done.stderr
    assert "pkg.lock.b -> pkg.lock.c: pkg/lock/b.py:2 (function-level)" in done.stderr
    assert "pkg.lock.c -> pkg.lock.a: pkg/lock/c.py:2 (function-level)" in done.stderr


def test_a_type_checking_cycle_fails(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
        "b.py": "import pkg.a\n",
    })
    done = _check(pkg)
    assert done.returncode == 1
    assert "pkg.a -> pkg.b: pkg/a.py:3 (TYPE_CHECKING)" in done.stderr


def test_an_acyclic_package_passes(tmp_path: Path) -> None:
    """Imports down a chain, a package's `__init__` importing its child, and outside imports: no cycle."""
    pkg = _package(tmp_path, {
        "__init__.py": "from pkg import top\n",
        "top.py": "import json\nimport pkg.mid\n\ndef f():\n    from pkg.low import base\n    return base\n",
        "mid.py": "from .low import base\nfrom . import low\n",
        "low/__init__.py": "",
        "low/base.py": "import os\n",
    })
    done = _check(pkg)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("pkg: no import cycle among 5 modules "
                           "(5 import statements of pkg modules: 1 function-level, 0 under TYPE_CHECKING)\n")



def test_repro_has_no_import_cycle() -> None:
    """The bar of issue 31, also run by `make lint-quick`: none in repro/, function-level imports included."""
    done = _check(REPO / "repro")
    assert done.returncode == 0, done.stderr
