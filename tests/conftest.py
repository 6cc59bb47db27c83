"""Shared fixtures: run repro in-process or as a real subprocess, on tiny configs."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import scheduling

REPO = Path(__file__).resolve().parent.parent
EMBEDDED_CONFIGS = REPO / "repro" / "configs"
DIGITS = REPO / "repro" / "examples" / "digits" / "digits.csv"
# Few steps keep end-to-end tests to a couple of seconds each.
TINY = ["trainer.max_steps=20", "trainer.log_every=5"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def without_run_details(stmt: dict[str, Any]) -> dict[str, Any]:
    """The part of a provenance statement that two builds of one lock share byte for byte."""
    return {**stmt, "predicate": {k: v for k, v in stmt["predicate"].items() if k != "runDetails"}}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns groups into node id suffixes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest units first, tests sharing a module fixture kept together (tests/scheduling.py)."""
    scheduling.order(items, scheduling.load_durations())


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store-durations", action="store_true",
                     help="rewrite tests/durations.json from this run (make test-durations)")


_MEASURED: list[tuple[str, float]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _MEASURED.append((report.nodeid, report.duration))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under xdist the controller sees every worker's reports; a worker writes nothing."""
    controller = not hasattr(session.config, "workerinput")
    if session.config.getoption("store_durations") and controller and exitstatus == 0:
        scheduling.write_durations(_MEASURED)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_repro(args: list[str], cwd: Path, env: dict[str, str] | None = None,
              prefix: list[str] | None = None, timeout: float = 600) -> Result:
    """`python -m repro ARGS` in a fresh process, importing repro from this checkout."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.setdefault("HF_DATASETS_OFFLINE", "1")
    proc = subprocess.run([*(prefix or []), sys.executable, "-m", "repro", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


# Pins whose two values the default profile both allows, for tests that need two settings giving
# different bits. Which of them changes the bits is a fact of the code (under the default profile the
# same on every CPU), found by `bit_deciding_pin` on the host rather than assumed: the portable
# kernels, for one, give the same bits for any thread count.
PIN_CANDIDATES: tuple[tuple[str, Any], ...] = (("threads", 1), ("cpu_capability", "default"))


def bit_deciding_pin(project: Path, baseline_weights: str, *extra: str) -> tuple[str, Any]:
    """The first candidate pin whose other value trains the tiny build of `project` to other weights
    than `baseline_weights` (the same build with the profile's pins); skips the test if none does."""
    for key, value in PIN_CANDIDATES:
        out = f"probe-{key}"
        r = run_repro(["train", "--quiet", *TINY, *extra, f"out_dir={out}", f"build.{key}={value}"], cwd=project)
        assert r.code == 0, r.stderr
        if sha256_file(project / out / "model.safetensors") != baseline_weights:
            return key, value
    pytest.skip(f"none of the pins {[k for k, _ in PIN_CANDIDATES]} changes the tiny build's bits here")


def make_project(root: Path) -> Path:
    """A copy of the digits project at `root`: configs/ plus the data at its usual relative path, in a git
    repository of its own (as `repro init` makes one), so that verify finds its root there and not in this
    checkout, whose repro/examples/digits/digits.csv lies at the same relative path."""
    shutil.copytree(EMBEDDED_CONFIGS, root / "configs", ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    data = root / "repro" / "examples" / "digits"
    data.mkdir(parents=True)
    shutil.copy2(DIGITS, data / "digits.csv")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh digits project per test."""
    return make_project(tmp_path / "project")


@pytest.fixture(autouse=True)
def _restore_global_state() -> Iterator[None]:
    """Tests that train in-process change seeds, env and torch flags; put them back."""
    env = dict(os.environ)
    py_state = random.getstate()
    cwd = os.getcwd()
    torch_state = None
    if "torch" in sys.modules:
        import torch

        torch_state = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                       torch.random.get_rng_state())
    yield
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    random.setstate(py_state)
    if torch_state is not None:
        import torch

        torch.set_num_threads(torch_state[0])
        torch.use_deterministic_algorithms(torch_state[1])
        torch.random.set_rng_state(torch_state[2])
