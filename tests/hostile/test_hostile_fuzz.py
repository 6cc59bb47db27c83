"""Property: whatever bytes sit where a lock should, verify --inputs-only, diff and audit
answer 0, 1 or 2: never a traceback (70), never a hang, never an import.

Inputs are arbitrary JSON documents, structural mutations of a real published lock
(a value replaced, a key deleted or added, anywhere in the tree) and byte-level
mutations of its text. Each case runs in-process through `repro.cli.main` under a
SIGALRM deadline; examples are bounded so the whole file stays near 30 s (REPRO_FUZZ_EXAMPLES=N searches longer).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile_helpers import trained  # noqa: F401  (the session's trained project, a fixture)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.cli import main

DEADLINE_S = 10
EXAMPLES = os.environ.get("REPRO_FUZZ_EXAMPLES")  # set it for a longer, random search
SETTINGS = settings(max_examples=int(EXAMPLES or 25), deadline=None, derandomize=EXAMPLES is None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, trained: Path) -> Path:  # noqa: F811
    """A copy of a lock this repro just wrote (outside git: its data resolves to the installed example)."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "a").mkdir()
    (folder / "real.lock").write_bytes((trained / "out" / "repro.lock").read_bytes())
    (folder / "cache").mkdir()
    return folder


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def mutated_lock(draw: Any, real: bytes) -> bytes:
    lock = json.loads(real)
    paths = [p for p in _paths(lock) if p]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        parent: Any = lock
        try:
            for part in path[:-1]:
                parent = parent[part]
            op = draw(st.sampled_from(["replace", "delete", "add"]))
            if op == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif op == "add" and isinstance(parent, dict):
                parent[draw(st.text(max_size=6))] = draw(json_values)
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed the path
            continue
    return json.dumps(lock, indent=2).encode()


def byte_mutation(draw: Any, real: bytes) -> bytes:
    raw = bytearray(real)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            raw[at:at] = draw(st.sampled_from([b"[", b"{", b"}", b"NaN", b"1e999", b'"', b",", b"\\", b"\x00",
                                               b"9" * 5000]))
        else:
            del raw[at:at + draw(st.integers(1, 50))]
    return bytes(raw)


def _check(workspace: Path, data: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    os.environ["REPRO_CACHE_DIR"] = str(workspace / "cache")
    lock = workspace / "a" / "repro.lock"
    lock.write_bytes(data)
    torch_before = "torch" in sys.modules
    before = set(sys.modules)
    for argv in (["verify", "--inputs-only", "--quiet", str(lock)], ["diff", str(workspace / "real.lock"), str(lock)],
                 ["audit", str(lock)]):
        def hung(*_: object, command: str = argv[0]) -> None:
            raise TimeoutError(f"repro {command} hung")

        old = signal.signal(signal.SIGALRM, hung)
        signal.alarm(DEADLINE_S)
        try:
            code = main(argv)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        err = capsys.readouterr().err
        assert code in (0, 1, 2), f"repro {' '.join(argv)} exited {code}:\n{err}\n{data[:300]!r}"
    new = set(sys.modules) - before
    assert not [m for m in new if str(getattr(sys.modules[m], "__file__", "") or "").startswith(str(workspace))]
    assert torch_before or "torch" not in sys.modules, "a read-only command imported torch"


@SETTINGS
@given(doc=json_values)
def test_arbitrary_json(workspace: Path, capsys: pytest.CaptureFixture[str], doc: Any) -> None:
    _check(workspace, json.dumps(doc).encode(), capsys)


@SETTINGS
@given(data=st.data())
def test_structural_mutations_of_a_real_lock(workspace: Path, capsys: pytest.CaptureFixture[str],
                                             data: st.DataObject) -> None:
    _check(workspace, mutated_lock(data.draw, (workspace / "real.lock").read_bytes()), capsys)


@SETTINGS
@given(data=st.data())
def test_byte_mutations_of_a_real_lock(workspace: Path, capsys: pytest.CaptureFixture[str],
                                       data: st.DataObject) -> None:
    _check(workspace, byte_mutation(data.draw, (workspace / "real.lock").read_bytes()), capsys)


def test_the_real_lock_itself_is_accepted(workspace: Path, trained: Path,  # noqa: F811
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The seed of the mutations must be a lock this repro reads, or they would test only the version check.
    Its project's config files are source (inputs.code), so the project is its root."""
    lock = workspace / "a" / "repro.lock"
    lock.write_bytes((workspace / "real.lock").read_bytes())
    os.environ["REPRO_CACHE_DIR"] = str(workspace / "cache")
    assert main(["diff", str(workspace / "real.lock"), str(lock)]) == 0
    assert main(["verify", "--inputs-only", "--quiet", "--root", str(trained), str(lock)]) == 0, capsys.readouterr()
