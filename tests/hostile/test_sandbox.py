"""The rebuild sandbox holds against the child itself: it tries to remount, connect, reach the network and write.

The probe runs inside `sandbox_for(...)`'s prefix exactly as a rebuild child
would, and reports what it managed; the test process plays the host (a UNIX
socket outside the project, an abstract one, a TCP listener on loopback).
With bubblewrap (what CI installs, `.ci/run`) every attempt must fail; the
unshare fallback must at least cut the network and keep the project read-only
even after the child tries to remount it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from repro.builder.sandbox import sandbox_for

PROBE = r"""
import json, os, socket, subprocess, sys
root, work, outside, port, abstract = sys.argv[1:6]
got = {}
def attempt(name, fn):
    try:
        fn()
        got[name] = True
    except Exception as exc:
        got[name] = False
def write(path):
    with open(path, "w") as fh:
        fh.write("written from inside the sandbox")
attempt("write_work", lambda: write(os.path.join(work, "ok")))
attempt("write_project", lambda: write(os.path.join(root, "pwned")))
attempt("write_outside", lambda: write(os.path.join(outside, "pwned")))
def sh(cmd):
    if subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=20).returncode != 0:
        raise OSError(cmd)
attempt("remount", lambda: sh(f"mount -o remount,bind,rw {root} && touch {root}/remounted"))
attempt("umount", lambda: sh(f"umount -l {root} && touch {root}/unmounted"))
attempt("nested_userns", lambda: sh(f"unshare -rm sh -c 'mount -o remount,bind,rw {root} && touch {root}/nested'"))
attempt("write_project_after", lambda: write(os.path.join(root, "pwned-after")))
def unix(address):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(3)
    s.connect(address)
    s.close()
attempt("host_unix_socket", lambda: unix(os.path.join(outside, "host.sock")))
attempt("abstract_unix_socket", lambda: unix("\0" + abstract))
attempt("host_loopback_tcp", lambda: socket.create_connection(("127.0.0.1", int(port)), timeout=3).close())
attempt("internet", lambda: socket.create_connection(("1.1.1.1", 80), timeout=3).close())
print(json.dumps(got))
"""


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[Path, Path, Path, int, str]]:
    """A project, a work folder, and outside them a UNIX socket, an abstract socket and a loopback listener."""
    root, work = tmp_path / "project", tmp_path / "work"
    # The host's socket folder: short (a UNIX socket path holds at most 107 bytes; the suite's tmp paths are long).
    outside = Path(tempfile.mkdtemp(prefix="repro-host-", dir="/tmp"))
    for folder in (root, work):
        folder.mkdir()
    (root / "data.csv").write_text("a,b\n1,2\n")
    servers = [socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX), socket.socket()]
    servers[0].bind(str(outside / "host.sock"))
    abstract = f"repro-sandbox-test-{os.getpid()}"
    servers[1].bind("\0" + abstract)
    servers[2].bind(("127.0.0.1", 0))
    for s in servers:
        s.listen()
    stop = threading.Event()

    def accept(server: socket.socket) -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                continue

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in servers]
    for t in threads:
        t.start()
    yield root, work, outside, servers[2].getsockname()[1], abstract
    stop.set()
    for t in threads:
        t.join()
    for s in servers:
        s.close()
    shutil.rmtree(outside, ignore_errors=True)


def test_the_sandbox_cannot_be_undone_from_inside(host: tuple[Path, Path, Path, int, str]) -> None:
    root, work, outside, port, abstract = host
    box = sandbox_for(root, work, world_size=1)
    assert not sandbox_for(root, work, 1, wanted=False).active
    if not box.active:
        pytest.skip(box.description)
    out = subprocess.run([*box.prefix, sys.executable, "-c", PROBE, str(root), str(work), str(outside), str(port),
                          abstract], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["write_work"] and (work / "ok").is_file()
    # Every mechanism: no network of any kind, and a project that stays read-only whatever the child tries.
    for escape in ("write_project", "remount", "umount", "nested_userns", "write_project_after",
                   "abstract_unix_socket", "host_loopback_tcp", "internet"):
        assert not got[escape], (box.mechanism, escape)
    assert sorted(p.name for p in root.iterdir()) == ["data.csv"]
    if box.mechanism != "bubblewrap":
        pytest.skip(f"{box.description}: host UNIX sockets and folders outside the project are reachable here; "
                    "bubblewrap hides them (install it: apt-get install bubblewrap)")
    assert not got["host_unix_socket"] and not got["write_outside"]
    assert sorted(p.name for p in outside.iterdir()) == ["host.sock"]


def test_bubblewrap_is_used_where_installed(tmp_path: Path) -> None:
    """CI installs bubblewrap (.ci/run); where it runs, it is the mechanism chosen, for one rank or several."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    root, work = tmp_path / "p", tmp_path / "w"
    root.mkdir()
    work.mkdir()
    assert sandbox_for(root, work, 1).mechanism == "bubblewrap"
    assert sandbox_for(root, work, 2).mechanism == "bubblewrap"
    inside = root / "work"  # --work-dir inside the project: writable on top of the read-only project
    inside.mkdir()
    box = sandbox_for(root, inside, 1)
    script = (f"import pathlib; pathlib.Path({str(inside / 'ok')!r}).write_text('w')\n"
              f"try:\n    pathlib.Path({str(root / 'x')!r}).write_text('w')\nexcept OSError:\n    pass\n")
    subprocess.run([*box.prefix, sys.executable, "-c", script], check=True, timeout=60)
    assert (inside / "ok").is_file() and not (root / "x").exists()
