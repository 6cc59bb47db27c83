# ruff: noqa: F811  (pytest fixtures imported from hostile_helpers are parameters here)
"""The hostile-release corpus of issue 29: one small script per vector, plus the weak spots.

Each case starts from a copy of a real trained release (`project`, trained once per
session), builds the attack the way the issue reproduced it, usually with a
payload that writes the marker file `guard.marker` outside the project if it
ever runs, and runs `repro` on it. Through `guard` every case asserts the
documented exit code, that no marker was written, that nothing outside the
root changed, that the canary file's contents, size and sha256 never appear in
any output, that nothing was imported from the tampered tree, and that the
command took under 10 s. docs/security.md's table maps each case to its defence.

Vectors 10 and 11 (the weights TOCTOU, a shipped hash cache with triggers) and
what-to-build item 6 (a shipped .repro/ cache) are covered by the hashing work
of issue 32, with its own cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile_helpers import (  # noqa: F401
    GIT_ENV,
    LIMIT_S,
    SECRET,
    Guard,
    edit,
    guard,
    lock_of,
    project,
    trained,
    write_lock,
)

from repro.canonical import canonical_json
from repro.lock import stagerecord
from repro.source.inputs import code_block, files_block

REPO = Path(__file__).resolve().parents[2]
GOLDEN_RECORD = REPO / "tests" / "fixtures" / "stagerecord" / "golden-v1.json"


def lock_path(project: Path) -> str:
    return str(project / "out" / "repro.lock")


def add_code(project: Path, lock: dict[str, Any], files: dict[str, str]) -> None:
    """Write project modules and reseal `inputs.code` with them, as an attacker with the release would."""
    for rel, text in files.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    recorded = [f["path"] for f in lock["inputs"]["code"]["files"]]
    lock["inputs"]["code"] = code_block(project, [], sorted({*recorded, *files}))


def add_stage_record(project: Path, lock: dict[str, Any], target: str, code: dict[str, str],
                     inputs: dict[str, bytes], params: dict[str, Any] | None = None) -> None:
    """A schema-valid, re-sealed stage record in `inputs.stages` (what `--from-source` reruns)."""
    for rel, text in code.items():
        (project / rel).write_text(text)
    for rel, data in inputs.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_bytes(data)
    record = json.loads(GOLDEN_RECORD.read_text())
    record["stage"] = "prep"
    record["declared"] = {"target": target, "params": params or {}, "inputs": sorted(inputs),
                          "outputs": ["made/out.txt"], "code": []}
    record["config_sha256"] = stagerecord.config_sha256(record["declared"], record["pins"])
    record["code"] = files_block(project, sorted(code))
    record["inputs"] = files_block(project, sorted(inputs))
    lock["inputs"]["stages"] = [record]


def fake_sparse(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)


# 1 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("node", ["{_target_: logging.basicConfig, filename: MARKER, filemode: w}",
                                  "{_target_: torch.load, f: MARKER, weights_only: false}"])
def test_v01_an_interpolation_in_the_locks_config_is_refused(project: Path, guard: Guard, node: str) -> None:
    payload = "${oc.create:'" + node.replace("MARKER", str(guard.marker)) + "'}"
    edit(project, lambda lk: lk["inputs"]["config"]["resolved"]["model"].update(extra=payload))
    for argv in (["verify", "--quiet", lock_path(project)], ["verify", "--inputs-only", lock_path(project)],
                 ["diff", lock_path(project), lock_path(project)], ["audit", lock_path(project)]):
        r = guard.run(*argv)
        assert r.code == 2 and "config key model.extra" in r.err and "interpolation" in r.err, (argv, r.err)


# 2 --------------------------------------------------------------------------------------------
def test_v02_a_target_reached_through_a_hashed_modules_attribute_is_refused(project: Path, guard: Guard) -> None:
    lock = lock_of(project)
    add_code(project, lock, {"p/net.py": "import torch\n\n\nclass Net(torch.nn.Module):\n    pass\n"})
    lock["inputs"]["config"]["resolved"]["model"] = {"_target_": "p.net.torch.save", "obj": 1, "f": str(guard.marker)}
    write_lock(project / "out" / "repro.lock", lock)
    r = guard.run("verify", "--quiet", "--rebuild-anyway", lock_path(project))
    assert r.code == 2 and "model._target_ = p.net.torch.save" in r.err and "--trust-code" in r.err, r.err


def test_v02_a_name_rebound_at_run_time_is_judged_as_the_object_it_is(project: Path, guard: Guard) -> None:
    """`save` is written as a def in the hashed p/net.py, then replaced by torch.save through globals(): the
    source looks right, so the build child judges the object it imports, before anything is instantiated."""
    lock = lock_of(project)
    add_code(project, lock, {"p/net.py": "import torch\n\n\ndef save(obj, f):\n    pass\n\n\n"
                                         "globals()['save'] = torch.save\n"})
    lock["inputs"]["config"]["resolved"]["model"] = {"_target_": "p.net.save", "obj": 1, "f": str(guard.marker)}
    write_lock(project / "out" / "repro.lock", lock)
    r = guard.run("verify", "--quiet", "--rebuild-anyway", "--no-record", lock_path(project))
    assert r.code == 2 and "model._target_ = p.net.save" in r.err and "torch.serialization.save" in r.err, r.err


# 3 --------------------------------------------------------------------------------------------
def test_v03_a_stage_records_target_goes_through_the_gate(project: Path, guard: Guard) -> None:
    victim = project / "notes.txt"
    victim.write_text("a file a stage must not truncate\n")
    lock = lock_of(project)
    add_stage_record(project, lock, "logging.basicConfig", {"toy.py": "def upper(**kw):\n    pass\n"},
                     {"raw/a.txt": b"hello\n"}, {"filename": str(victim), "filemode": "w"})
    write_lock(project / "out" / "repro.lock", lock)
    r = guard.run("verify", "--from-source", "--quiet", lock_path(project))
    assert r.code == 2 and "inputs.stages[0] (stage prep).declared.target = logging.basicConfig" in r.err, r.err
    assert victim.read_text() == "a file a stage must not truncate\n"


def test_v03_a_stage_target_in_a_file_hashed_only_as_an_input_never_runs(project: Path, guard: Guard) -> None:
    lock = lock_of(project)
    evil = f"def run(**kw):\n    open({str(guard.marker)!r}, 'w').write('ran')\n"
    add_stage_record(project, lock, "evil.run", {"toy.py": "def upper(**kw):\n    pass\n"},
                     {"raw/a.txt": b"hello\n", "evil.py": evil.encode()})
    write_lock(project / "out" / "repro.lock", lock)
    r = guard.run("verify", "--from-source", "--quiet", lock_path(project))
    assert r.code == 2 and "declared.target = evil.run" in r.err and "hashed" in r.err, r.err


# 4 --------------------------------------------------------------------------------------------
def test_v04_a_root_level_module_shadowing_a_library_is_refused_before_a_rebuild(project: Path,
                                                                              guard: Guard) -> None:
    (project / "jsonschema.py").write_text(f"open({str(guard.marker)!r}, 'w').write('ran')\n")
    r = guard.run("verify", "--quiet", "--rebuild-anyway", "--no-record", lock_path(project))
    assert r.code == 2 and "jsonschema.py" in r.err and "installed package" in r.err, r.err


def test_v04_train_refuses_a_root_level_module_shadowing_the_standard_library(project: Path, guard: Guard,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "yaml.py").write_text(f"open({str(guard.marker)!r}, 'w').write('ran')\n")
    (project / "json.py").write_text(f"open({str(guard.marker)!r}, 'w').write('ran')\n")
    monkeypatch.chdir(project)
    r = guard.run("train", "--quiet", "trainer.max_steps=1", "out_dir=elsewhere")
    assert r.code == 2 and "json.py" in r.err and "standard library" in r.err, r.err
    assert not (project / "elsewhere").exists()


def test_v04_python_m_repro_never_imports_from_the_current_folder(project: Path, guard: Guard) -> None:
    payload = f"open({str(guard.marker)!r}, 'w').write('ran')\n"
    for name in ("json.py", "argparse.py", "hashlib.py"):
        (project / name).write_text(payload)
    before = guard.snapshot()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for argv in (["-m", "repro", "verify", "--inputs-only", "--quiet", "out/repro.lock"], ["-m", "repro", "--help"]):
        r = subprocess.run([sys.executable, *argv], cwd=project, env=env, capture_output=True, text=True,
                           timeout=LIMIT_S)
        guard.check(r.stdout + r.stderr, before)
        assert r.returncode == 0, r.stderr


# 5 --------------------------------------------------------------------------------------------
SEARCHPATH = "hydra:\n  searchpath:\n    - pkg://evilmod\n"


def test_v05_inputs_only_never_composes_the_projects_hydra_config(project: Path, guard: Guard) -> None:
    (project / "evilmod.py").write_text(f"open({str(guard.marker)!r}, 'w').write('ran')\n")
    with (project / "configs" / "train.yaml").open("a") as fh:
        fh.write(SEARCHPATH)
    # An edit the lock's digest no longer covers: verify explains it, which once composed configs/train.yaml.
    path = edit(project, lambda lk: lk["inputs"]["config"]["resolved"]["trainer"].update(lr=0.5),
                rehash_config=False)
    r = guard.run("verify", "--inputs-only", "--quiet", str(path))
    assert r.code == 1 and "config" in r.out, r.out
    assert "evilmod" not in sys.modules


def test_v05_composing_refuses_a_search_path_outside_repro_and_the_project(project: Path, guard: Guard,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "evilmod.py").write_text(f"open({str(guard.marker)!r}, 'w').write('ran')\n")
    with (project / "configs" / "train.yaml").open("a") as fh:
        fh.write(SEARCHPATH)
    monkeypatch.chdir(project)
    for argv in (["train", "--cfg", "job"], ["train", "--quiet", "trainer.max_steps=1"], ["check", "--axes", "again"]):
        r = guard.run(*argv)
        assert r.code == 2 and "hydra.searchpath entry 'pkg://evilmod'" in r.err, (argv, r.err)


ALIAS_BOMB = "".join(f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}]\n" for i in range(1, 12))


def test_v05_a_yaml_alias_bomb_in_a_config_is_refused_at_once(project: Path, guard: Guard,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "configs" / "bomb.yaml").write_text("l0: &l0 [x, x, x, x]\n" + ALIAS_BOMB)
    monkeypatch.chdir(project)
    r = guard.run("train", "--cfg", "job")
    assert r.code == 2 and "bomb.yaml" in r.err and "expands to over" in r.err, r.err
    path = edit(project, lambda lk: lk["inputs"]["config"]["resolved"]["trainer"].update(lr=0.5),
                rehash_config=False)
    assert guard.run("verify", "--inputs-only", "--quiet", str(path)).code == 1


# 6 --------------------------------------------------------------------------------------------
SANDBOX_PAYLOAD = '''
import json, os, socket, subprocess
from repro.models import MLP

ROOT, SOCKET, MARKER = {root!r}, {sock!r}, {marker!r}
got = {{}}
def attempt(name, fn):
    try:
        fn()
        got[name] = True
    except Exception:
        got[name] = False
def write(path):
    with open(path, "w") as fh:
        fh.write("ran")
def sh(cmd):
    if subprocess.run(["sh", "-c", cmd], capture_output=True).returncode:
        raise OSError(cmd)
def unix(address):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(address)
attempt("write_outside", lambda: write(MARKER))
attempt("write_project", lambda: write(os.path.join(ROOT, "pwned")))
attempt("remount", lambda: sh(f"mount -o remount,bind,rw {{ROOT}} && touch {{ROOT}}/pwned"))
attempt("host_unix_socket", lambda: unix(SOCKET))
attempt("network", lambda: socket.create_connection(("1.1.1.1", 80), timeout=2))
write("sandbox-findings.json.tmp")  # the work folder (the child's cwd) is the one writable place
with open("sandbox-findings.json", "w") as fh:
    json.dump(got, fh)


class Net(MLP):
    pass
'''


@pytest.fixture
def host_socket() -> Iterator[tuple[Path, list[int]]]:
    """A UNIX socket of the host, outside the project (in a short folder: a socket path holds at most 107
    bytes), and the list of connections it accepted."""
    folder = Path(tempfile.mkdtemp(prefix="repro-host-", dir="/tmp"))
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "host.sock"))
    server.listen()
    server.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                server.accept()[0].close()
                accepted.append(1)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield folder / "host.sock", accepted
    stop.set()
    thread.join()
    server.close()
    shutil.rmtree(folder, ignore_errors=True)


def test_v06_hashed_project_code_cannot_escape_the_rebuild_sandbox(project: Path, guard: Guard, tmp_path: Path,
                                                                   host_socket: tuple[Path, list[int]]) -> None:
    from repro.builder.sandbox import sandbox_for

    (tmp_path / "work").mkdir()
    box = sandbox_for(project, tmp_path / "work", 1)
    if box.mechanism != "bubblewrap":
        pytest.skip(f"{box.description}: the full sandbox needs bubblewrap (CI installs it)")
    lock = lock_of(project)
    sock, accepted = host_socket
    add_code(project, lock, {"p/evil.py": SANDBOX_PAYLOAD.format(root=str(project), sock=str(sock),
                                                                 marker=str(guard.marker))})
    lock["inputs"]["config"]["resolved"]["model"]["_target_"] = "p.evil.Net"
    write_lock(project / "out" / "repro.lock", lock)
    work = tmp_path / "work"
    r = guard.run("verify", "--quiet", "--no-record", "--work-dir", str(work), lock_path(project))
    assert r.code == 0 and "sandbox    bubblewrap" in r.out, r.out + r.err  # the same MLP: the same bits
    findings = json.loads((work / "sandbox-findings.json").read_text())
    assert findings == {"write_outside": False, "write_project": False, "remount": False,
                        "host_unix_socket": False, "network": False}
    assert not accepted and not (project / "pwned").exists()


# 7 --------------------------------------------------------------------------------------------
def test_v07_a_weights_path_through_a_linked_folder_is_never_read(project: Path, guard: Guard) -> None:
    os.symlink(guard.outside / "etc", project / "out" / "sub")
    path = edit(project, lambda lk: lk["outputs"]["weights"].update(path="sub/passwd"), rehash_config=False)
    r = guard.run("verify", "--quiet", str(path))
    assert r.code == 2 and "sub/passwd" in r.err and "symbolic link" in r.err, r.err


# 8 --------------------------------------------------------------------------------------------
def test_v08_core_worktree_in_a_shipped_git_config_cannot_move_the_root(project: Path, guard: Guard) -> None:
    subprocess.run(["git", "-C", str(project), "config", "core.worktree", "../../.."], check=True, env=GIT_ENV)
    path = edit(project, lambda lk: lk["inputs"]["data"]["files"][0].update(path="outside/etc/passwd"))
    r = guard.run("verify", "--inputs-only", "--quiet", str(path))
    # The root stays the release's own folder: the named file is simply not there (a difference, exit 1).
    assert r.code == 1 and f"root       {project}" in r.out and "outside/etc/passwd" in r.out, r.out + r.err


# 9 --------------------------------------------------------------------------------------------
def _from_source_release(project: Path, lock: dict[str, Any]) -> None:
    add_stage_record(project, lock, "toy.upper", {"toy.py": "def upper(**kw):\n    pass\n"},
                     {"raw/a.txt": b"hello\n"})


def test_v09_from_source_never_copies_a_primary_source_linked_outside(project: Path, guard: Guard) -> None:
    lock = lock_of(project)
    _from_source_release(project, lock)
    write_lock(project / "out" / "repro.lock", lock)
    (project / "raw" / "a.txt").unlink()
    os.symlink(guard.secret, project / "raw" / "a.txt")
    r = guard.run("verify", "--from-source", "--quiet", lock_path(project))
    assert r.code == 2 and "raw/a.txt" in r.err and "outside the project root" in r.err, r.err


def test_v09_from_source_never_copies_a_sparse_giant_recorded_as_small(project: Path, guard: Guard) -> None:
    lock = lock_of(project)
    _from_source_release(project, lock)
    write_lock(project / "out" / "repro.lock", lock)
    fake_sparse(project / "raw" / "a.txt", 1 << 30)
    r = guard.run("verify", "--from-source", "--quiet", lock_path(project))
    assert r.code == 1 and "raw/a.txt" in r.out and "not copied" in r.out, r.out + r.err


# 12 -------------------------------------------------------------------------------------------
def test_v12_an_anchored_dvc_yaml_is_refused_at_once(project: Path, guard: Guard,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "dvc.yaml").write_text("l0: &l0 [x, x, x, x]\n" + ALIAS_BOMB + "stages: {}\n")
    monkeypatch.chdir(project)
    r = guard.run("dvc-yaml")
    assert r.code == 2 and "dvc.yaml" in r.err and "expands to over" in r.err, r.err
    from repro.pipeline.dvc_lineage import read_stages

    assert read_stages(project) == []  # verify's lineage hints skip it the same way


# 13 -------------------------------------------------------------------------------------------
def test_v13_a_giant_sparse_weights_file_is_compared_in_bounded_memory(project: Path, guard: Guard) -> None:
    """The issue's file held 1 GiB; 128 MiB shows the bound as well (it was read whole, then copied) and keeps
    the case fast: the whole-file sha256 alone takes seconds on a loaded machine."""
    size = 128 << 20
    header = json.dumps({"net.0.weight": {"dtype": "F32", "shape": [size // 4], "data_offsets": [0, size]}})
    weights = project / "out" / "model.safetensors"
    weights.unlink()
    with open(weights, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header.encode())
        fh.truncate(8 + len(header) + size)
    # The inputs differ too (a config edit the digest no longer covers), so no rebuild runs: this case is the
    # weights check alone.
    path = edit(project, lambda lk: lk["inputs"]["config"]["resolved"]["trainer"].update(lr=0.5),
                rehash_config=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = guard.run("verify", "--quiet", str(path))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) >> 10
    assert r.code == 1 and "model.safetensors" in r.out and "net.0.weight" in r.out, r.out + r.err
    assert grown_mib < 48, f"{grown_mib} MiB for a {size >> 20} MiB weights file"


# 14 -------------------------------------------------------------------------------------------
def test_v14_a_giant_signature_bundle_is_refused_before_model_signing_reads_it(project: Path,
                                                                               guard: Guard) -> None:
    pytest.importorskip("model_signing")
    from signing_keys import make_keypair

    _, pub = make_keypair(project.parent, "k")
    fake_sparse(project / "out" / "model.sig", 2 << 30)
    r = guard.run("verify-signature", str(project / "out"), "--public-key", str(pub))
    assert r.code == 2 and "model.sig" in r.err and "cap" in r.err, r.err


# 15 -------------------------------------------------------------------------------------------
def test_v15_a_lock_of_350k_entries_is_refused_before_parsing(project: Path, guard: Guard) -> None:
    lock = lock_of(project)
    entry = lock["inputs"]["data"]["files"][0]
    lock["inputs"]["data"]["files"] = [{**entry, "path": f"d/{i:07d}.csv"} for i in range(350_000)]
    path = project / "out" / "repro.lock"
    path.write_bytes(json.dumps(lock).encode())
    assert path.stat().st_size < 64 << 20  # under the byte cap: the entry count is what refuses it
    for argv in (["verify", "--inputs-only", "--quiet", str(path)], ["diff", str(path), str(path)],
                 ["audit", str(path)]):
        r = guard.run(*argv)
        assert r.code == 2 and "over the cap of 250000 entries" in r.err, (argv, r.err)


# 16 -------------------------------------------------------------------------------------------
def test_v16_a_lone_surrogate_is_refused_at_parse_time(project: Path, guard: Guard) -> None:
    path = project / "out" / "repro.lock"
    raw = path.read_bytes().replace(b'"path": "repro/examples', b'"path": "\\ud800repro/examples', 1)
    assert raw != path.read_bytes()
    path.write_bytes(raw)
    for argv in (["verify", "--inputs-only", "--json", str(path)], ["diff", "--json", str(path), str(path)],
                 ["audit", "--json", str(path)], ["card", str(path)]):
        r = guard.run(*argv)
        assert r.code == 2 and "lone surrogate" in r.err, (argv, r.err)
        if "--json" in argv:
            assert json.loads(r.out)["exit_code"] == 2


# Weak spots -------------------------------------------------------------------------------------
def test_weak_a_bad_rng_state_in_a_resumed_checkpoint_is_exit_2_naming_it(project: Path, guard: Guard,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from repro.train import checkpoint

    folder = _real_checkpoint(project, monkeypatch)
    raw = json.loads((folder / checkpoint.STATE_NAME).read_text())
    raw["rng"]["python"]["state"] = raw["rng"]["python"]["state"][:-3]  # a Mersenne Twister state cut short
    _rewrite_checkpoint(folder, raw)
    r = guard.run("train", "--quiet", "--resume-from", str(folder), "trainer.max_steps=4", "out_dir=again",
                  "trainer.checkpoint_every=2")
    assert r.code == 2 and "state.json" in r.err and "rng.python" in r.err, r.err


def _real_checkpoint(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkpoint a real build wrote (paused after step 2, its checkpoint kept), as a folder to tamper with."""
    from repro.train import checkpoint
    from repro.train.resume import PAUSE_AFTER_STEP_ENV

    monkeypatch.chdir(project)
    env = {**os.environ, PAUSE_AFTER_STEP_ENV: "2", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "repro", "train", "--quiet", "trainer.max_steps=4",
                             "trainer.checkpoint_every=2", "out_dir=ck"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = project / "ck" / "checkpoints" / ".paused-after-step-2"
    try:
        for _ in range(600):
            if marker.exists():
                break
            if proc.poll() is not None:
                raise AssertionError("the build ended before pausing")
            threading.Event().wait(0.05)
        folder = project / "ck" / "checkpoints" / checkpoint.dir_name(2)
        kept = project / "kept-checkpoint"
        shutil.copytree(folder, kept)
    finally:
        proc.kill()
        proc.wait()
    return kept


def _rewrite_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write a tampered state.json and re-seal the manifest, as an attacker would."""
    from repro.train import checkpoint

    data = canonical_json(state)
    (folder / checkpoint.STATE_NAME).write_bytes(data)
    manifest = json.loads((folder / checkpoint.MANIFEST_NAME).read_text())
    for f in manifest["files"]:
        if f["path"] == checkpoint.STATE_NAME:
            f["size"], f["hashes"]["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (folder / checkpoint.MANIFEST_NAME).write_bytes(canonical_json(manifest))


def test_weak_the_card_escapes_control_characters_markdown_and_html(project: Path, guard: Guard) -> None:
    hostile = "\x1b[31mred\x1b[0m\n\n| Reproducible | **yes** |\n<img src=\"https://beacon.invalid/x.png\">"
    edit(project, lambda lk: lk["inputs"]["config"]["resolved"].setdefault("release", {}).update(
        data_description=hostile))
    r = guard.run("card", str(project / "out"))
    assert r.code == 0, r.err
    card = (project / "out" / "README.md").read_text()
    assert "\x1b" not in card and "<img" not in card
    assert card.count("| Reproducible | **yes** |") == 0


def test_weak_a_failed_card_leaves_nothing_behind(project: Path, guard: Guard) -> None:
    out = project / "out"
    before = sorted(p.name for p in out.iterdir())
    run_json = out / "run.json"
    run_json.write_bytes(run_json.read_bytes().replace(b"{", b'{"git": 1, "git": 2,', 1))  # a duplicate key
    r = guard.run("card", str(out))
    assert r.code == 2 and "run.json" in r.err
    assert sorted(p.name for p in out.iterdir()) == before


def test_the_corpus_release_is_untouched_by_the_cases(trained: Path) -> None:
    """Each case tampers with its own copy: the shared release still verifies its inputs."""
    r = subprocess.run([sys.executable, "-m", "repro", "verify", "--inputs-only", "--quiet", "out/repro.lock"],
                       cwd=trained, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                       timeout=LIMIT_S)
    assert r.returncode == 0, r.stdout + r.stderr
