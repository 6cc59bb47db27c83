"""A real trained project, and a guard that proves a hostile input stayed inside it.

`project` is a git repository holding the digits project and a release trained
from it (20 steps, once per session). Each test tampers with a copy. The `guard`
fixture puts a sentinel folder beside the copy (outside its root) and, after
the command, asserts that nothing in it was written (a payload's marker file
goes there), that its secret (the canary) never reached the output, by content,
size or sha256, that no module was imported from the tampered tree, and that the
command took under `LIMIT_S` seconds (a hang or a stall is a failure).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, make_project, run_repro

from repro.canonical import canonical_json
from repro.cli import main
from repro.source.inputs import config_digest

SECRET = b"root:x:0:0:the sentinel outside the project root\n"
LIMIT_S = 10.0  # no hostile input may make one command run longer (issue 29's acceptance)
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_GLOBAL": "/dev/null"}


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A stall is a failure: SIGALRM after 60 s raises in the test instead of waiting for ever.
    Autouse in every module that imports it."""
    def fail(*_: object) -> None:
        raise TimeoutError("repro stalled on a hostile input")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class Guard:
    outside: Path
    secret: Path
    root: Path
    capsys: pytest.CaptureFixture[str]

    @property
    def marker(self) -> Path:
        """Where a payload writes if it ran (outside the root: the snapshot would change too)."""
        return self.outside / "MARKER"

    def run(self, *argv: str, limit_s: float = LIMIT_S) -> Outcome:
        """`repro ARGV` in-process, then the promises: nothing outside written, read out, imported; in time."""
        before_tree = _snapshot(self.outside)
        before_modules = set(sys.modules)
        self.capsys.readouterr()
        started = time.monotonic()
        code = main(list(argv))
        seconds = time.monotonic() - started
        out, err = self.capsys.readouterr()
        outcome = Outcome(code, out, err)
        self.check(outcome.text, before_tree)
        assert seconds < limit_s, f"repro {argv[0]} took {seconds:.1f} s on hostile input"
        imported = [m for m in set(sys.modules) - before_modules
                    if str(getattr(sys.modules[m], "__file__", "") or "").startswith(str(self.root.parent))]
        assert not imported, f"imported from the tampered tree: {imported}"
        return outcome

    def snapshot(self) -> dict[str, Any]:
        return _snapshot(self.outside)

    def check(self, text: str, before_tree: dict[str, Any]) -> None:
        """Nothing outside written (no marker), the canary never in `text`."""
        assert not self.marker.exists(), "a payload ran: its marker file exists"
        assert _snapshot(self.outside) == before_tree, "a file outside the project root was written"
        digest = hashlib.sha256(SECRET).hexdigest()
        assert digest[:12] not in text and str(len(SECRET)) + " bytes" not in text, \
            "a file outside the project root was read"
        assert "the sentinel" not in text


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("hostile") / "project")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env={**os.environ, **GIT_ENV})
    r = run_repro(["train", "--quiet", *TINY, "out_dir=out"], cwd=root)
    assert r.code == 0, r.stderr
    return root


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained project (with its .git) to tamper with."""
    dest = tmp_path / "root" / "project"
    shutil.copytree(trained, dest, symlinks=True)
    return dest


@pytest.fixture
def guard(project: Path, capsys: pytest.CaptureFixture[str]) -> Guard:
    outside = project.parent.parent / "outside"
    (outside / "etc").mkdir(parents=True)
    secret = outside / "etc" / "passwd"
    secret.write_bytes(SECRET)
    (outside / "victim.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
    return Guard(outside, secret, project, capsys)


def _snapshot(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        st = os.lstat(path)
        body = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        out[str(path)] = (st.st_mode, st.st_size, st.st_mtime_ns, body)
    return out


def lock_of(project: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((project / "out" / "repro.lock").read_text())
    return loaded


def write_lock(path: Path, lock: dict[str, Any], rehash_config: bool = True) -> Path:
    """Write a tampered lock; by default with its config digest recomputed, as an attacker would."""
    if rehash_config:
        lock["inputs"]["config"]["sha256"] = config_digest(lock["inputs"]["config"]["resolved"])["sha256"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canonical_json(lock))
    return path


def edit(project: Path, change: Callable[[dict[str, Any]], object], rehash_config: bool = True) -> Path:
    lock = lock_of(project)
    change(lock)
    return write_lock(project / "out" / "repro.lock", lock, rehash_config)
