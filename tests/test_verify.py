"""`repro verify` end to end: the tamper matrix, hostile shells, other paths, a git clone.

One project is trained once per module (a git repo whose data is a folder of two
CSV parts, so files can be added, removed and renamed). Each tamper case works
on a copy of it, and most cases stop before the rebuild, so only a handful of
tests pay for a training run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DIGITS, REPO, TINY, bit_deciding_pin, run_repro, sha256_file

from repro.environment.pins import Pins, pinned_variables
from repro.lock.lockdiff import PIN_KEYS
from repro.source.inputs import config_digest
from repro.trust.attestation import RECORD_NAME, check_record

pytestmark = pytest.mark.slow

DATA_OVERRIDE = "data.data_files=[data/digits]"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_GLOBAL": "/dev/null"}
HOSTILE_SHELL = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_CBWR": "AVX2",
                 "ATEN_CPU_CAPABILITY": "default", "CUDA_VISIBLE_DEVICES": "0", "PYTHONHASHSEED": "123"}


def git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV},
                          capture_output=True, text=True, check=True)
    return proc.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repo: the repo's configs/, the digits data split in two files, and a committed release."""
    root = tmp_path_factory.mktemp("verify") / "project"
    shutil.copytree(REPO / "configs", root / "configs")
    rows = DIGITS.read_text().splitlines(keepends=True)
    (root / "data" / "digits").mkdir(parents=True)
    (root / "data" / "digits" / "part-0.csv").write_text("".join(rows[:900]))
    (root / "data" / "digits" / "part-1.csv").write_text(rows[0] + "".join(rows[900:]))
    git("init", "-q", "-b", "main", cwd=root)
    git("add", ".", cwd=root)
    git("commit", "-qm", "project", cwd=root)
    r = run_repro(["train", "--quiet", *TINY, DATA_OVERRIDE, "out_dir=out"], cwd=root)
    assert r.code == 0, r.stderr
    git("add", "out", cwd=root)
    git("commit", "-qm", "release", cwd=root)
    return root


@pytest.fixture(scope="module")
def pin_change(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    """A pin and another value of it that gives other weights for the trained build (found on this host)."""
    probe = tmp_path_factory.mktemp("pin-probe") / "project"
    shutil.copytree(trained, probe, symlinks=True)
    weights = sha256_file(trained / "out" / "model.safetensors")
    return bit_deciding_pin(probe, weights, DATA_OVERRIDE)


@pytest.fixture
def copy(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained project (git history included) to tamper with."""
    dest = tmp_path / "copy"
    shutil.copytree(trained, dest, symlinks=True)
    return dest


def verify(lock: Path, *args: str, cwd: Path, env: dict[str, str] | None = None,
           prefix: list[str] | None = None) -> Any:
    return run_repro(["verify", "--quiet", str(lock), *args], cwd=cwd, env=env, prefix=prefix)


def verify_json(lock: Path, *args: str, cwd: Path, **kw: Any) -> tuple[int, dict[str, Any]]:
    r = verify(lock, "--json", *args, cwd=cwd, **kw)
    assert r.stdout.strip(), r.stderr
    envelope = json.loads(r.stdout)
    assert envelope["command"] == "verify" and envelope["exit_code"] == r.code, envelope
    return r.code, envelope["result"]


def edit_lock(lock: Path, change: Any, *, redigest: bool = False) -> None:
    data = json.loads(lock.read_text())
    change(data)
    if redigest:  # a consistent edit: the config digest follows the edited config
        data["inputs"]["config"]["sha256"] = config_digest(data["inputs"]["config"]["resolved"])["sha256"]
    lock.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def assert_user_error(r: Any, code: int, *needles: str) -> None:
    assert r.code == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


# --- honest verifies ---------------------------------------------------------------------------


def test_honest_verify_from_another_cwd_ignores_the_verifiers_shell(trained: Path, tmp_path: Path) -> None:
    """Other cwd, a hostile shell, and one core only: the rebuild still gives the same bytes."""
    code, report = verify_json(trained / "out" / "repro.lock", "--no-record", cwd=tmp_path, env=HOSTILE_SHELL,
                               prefix=["taskset", "-c", "0"])
    assert code == 0, report
    assert report["result"] == "identical" and report["version"] == 2 and report["differences"] == []
    assert report["root"] == str(trained.resolve())
    assert report["rebuild"]["performed"] is True
    assert report["rebuild"]["weights_sha256"] == sha256_file(trained / "out" / "model.safetensors")
    assert report["checked"]["data_files"] == 2 and report["checked"]["weights_file"]
    assert report["record"] is None and not (trained / "out" / RECORD_NAME).exists()  # --no-record
    threads = [n for n in report["notes"] if n["name"] == "threads"]
    assert threads and threads[0]["old"] == 2 and threads[0]["new"] == 1  # pin applied on a 1-core machine


def test_fresh_git_clone_at_another_path_verifies(trained: Path, tmp_path: Path) -> None:
    clone = tmp_path / "somewhere" / "else" / "clone"
    subprocess.run(["git", "clone", "-q", str(trained), str(clone)], check=True, capture_output=True)
    work = tmp_path / "work"
    r = verify(clone / "out" / "repro.lock", "--work-dir", str(work), cwd=tmp_path)
    assert r.code == 0, r.stdout + r.stderr
    assert "OK: bit-identical to the lock" in r.stdout
    assert f"root       {clone.resolve()}  (the git repository holding the lockfile)" in r.stdout
    # The kept rebuild is byte-identical, lock included: no path, host or time leaked into it.
    assert sha256_file(work / "out" / "model.safetensors") == sha256_file(trained / "out" / "model.safetensors")
    assert (work / "out" / "repro.lock").read_bytes() == (trained / "out" / "repro.lock").read_bytes()
    record = clone / "out" / RECORD_NAME
    lock_sha, weights_sha = sha256_file(clone / "out" / "repro.lock"), sha256_file(work / "out" / "model.safetensors")
    check = check_record(record, lock_sha, weights_sha)
    assert check.valid and check.self_reported, check.reason  # unsigned: valid, but only self-reported
    assert check.machine["cpu_model"]


def test_inputs_only_never_imports_torch(trained: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "repro", "verify", "--inputs-only",
                           str(trained / "out" / "repro.lock")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: inputs match the lock" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "repro.verify" in imported
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}


# --- the tamper matrix: inputs ------------------------------------------------------------------


def test_one_flipped_data_byte_names_the_file(copy: Path) -> None:
    part = copy / "data" / "digits" / "part-1.csv"
    raw = bytearray(part.read_bytes())
    idx = raw.index(b"\n") + 1
    raw[idx] = ord("7") if raw[idx] != ord("7") else ord("3")
    part.write_bytes(bytes(raw))
    r = verify(copy / "out" / "repro.lock", cwd=copy)
    assert r.code == 1, r.stdout + r.stderr
    assert "data         changed  data/digits/part-1.csv" in r.stdout
    assert "part-0.csv" not in r.stdout
    assert "rebuild    skipped" in r.stdout and "hint: the data differs (data/digits/part-1.csv)" in r.stdout


@pytest.mark.parametrize(("action", "expected"), [
    ("add", [("added", "data/digits/part-2.csv")]),
    ("remove", [("removed", "data/digits/part-1.csv")]),
    ("rename", [("renamed", "data/digits/part-9.csv")]),
])
def test_data_file_added_removed_renamed(copy: Path, action: str, expected: list[tuple[str, str]]) -> None:
    folder = copy / "data" / "digits"
    if action == "add":
        shutil.copy(folder / "part-1.csv", folder / "part-2.csv")
    elif action == "remove":
        (folder / "part-1.csv").unlink()
    else:
        (folder / "part-1.csv").rename(folder / "part-9.csv")
    code, report = verify_json(copy / "out" / "repro.lock", "--inputs-only", cwd=copy)
    assert code == 1
    got = [(d["change"], d["name"]) for d in report["differences"]]
    assert got == expected
    assert all(d["kind"] == "data" and d["section"] == "inputs" for d in report["differences"])
    if action == "rename":
        assert report["differences"][0]["old"] == "data/digits/part-1.csv"


def test_config_value_edited_in_the_lock_is_named_with_both_values(copy: Path) -> None:
    lock = copy / "out" / "repro.lock"
    edit_lock(lock, lambda d: d["inputs"]["config"]["resolved"]["trainer"].update(lr=0.02))
    r = verify(lock, cwd=copy)
    assert r.code == 1, r.stdout + r.stderr
    assert "config       changed  trainer.lr  0.01 -> 0.02" in r.stdout
    assert "rebuild    skipped" in r.stdout
    code, report = verify_json(lock, "--inputs-only", cwd=copy)
    assert code == 1
    [d] = report["differences"]
    assert (d["kind"], d["name"], d["old"], d["new"]) == ("config", "trainer.lr", 0.01, 0.02)


def test_project_code_file_edited(copy: Path) -> None:
    yaml = copy / "configs" / "train.yaml"
    yaml.write_text(yaml.read_text() + "# an innocent-looking comment\n")
    r = verify(copy / "out" / "repro.lock", "--inputs-only", cwd=copy)
    assert r.code == 1
    assert "code         changed  configs/train.yaml" in r.stdout
    commit = json.loads((copy / "out" / "run.json").read_text())["git"]["commit"]  # not in the lock
    assert f"check out commit {commit[:12]}" in r.stdout


def _verify_with_repro(trained: Path, tmp_path: Path, rel: str, *args: str) -> tuple[int, dict[str, Any]]:
    """verify (default --inputs-only) with a copy of repro whose file `rel` gained a docstring line."""
    alt = tmp_path / "alt"
    if not alt.exists():
        shutil.copytree(REPO / "repro", alt / "repro", ignore=shutil.ignore_patterns("__pycache__"))
        edited = alt / rel
        edited.write_text(edited.read_text().replace('"""', '"""Edited. ', 1))
    env = {**os.environ, "PYTHONPATH": str(alt)}
    proc = subprocess.run([sys.executable, "-m", "repro", "verify", "--quiet", "--json", *(args or ["--inputs-only"]),
                           str(trained / "out" / "repro.lock")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)["result"]


def test_repro_compiler_edited_is_toolchain_drift_not_a_source_change(trained: Path, tmp_path: Path) -> None:
    code, report = _verify_with_repro(trained, tmp_path, "repro/models.py")
    assert code == 0 and report["differences"] == [], report
    notes = [(d["section"], d["kind"], d["name"]) for d in report["notes"]]
    assert ("toolchain", "compiler", "repro/models.py") in notes


def test_a_docstring_edit_outside_the_compiler_changes_nothing(trained: Path, tmp_path: Path) -> None:
    for args in (["--inputs-only"], ["--no-record"]):  # and a full rebuild, by the edited repro
        code, report = _verify_with_repro(trained, tmp_path, "repro/trust/model_card.py", *args)
        assert code == 0 and report["differences"] == [], report
        assert not [d for d in report["notes"] if d["section"] == "toolchain"], report["notes"]


# --- pins ----------------------------------------------------------------------------------------


def test_a_pin_edited_is_reported_as_a_pin_and_the_rebuild_differs(copy: Path, pin_change: tuple[str, Any]) -> None:
    key, value = pin_change
    lock = copy / "out" / "repro.lock"
    was = json.loads(lock.read_text())["build"][key]
    edit_lock(lock, lambda d: d["build"].update({key: value}))
    r = verify(lock, cwd=copy)
    assert r.code == 1
    shown = f"pin          changed  {key}  {was!r} -> {value!r}" if isinstance(value, str) else \
        f"pin          changed  {key}  {was} -> {value}"  # the report quotes strings
    assert f"{shown}  (the lock's build section says {value!r}" in r.stdout
    assert f"{shown}  (torch reported {key}={was!r} at build time" in r.stdout
    assert "rebuild    skipped" in r.stdout

    code, report = verify_json(lock, "--rebuild-anyway", cwd=copy)
    assert code == 1 and report["rebuild"]["performed"]
    locked = json.loads(lock.read_text())["outputs"]["weights"]["hashes"]["sha256"]
    check = check_record(copy / "out" / RECORD_NAME, sha256_file(lock), locked)
    assert not check.valid and "differ from the locked" in check.reason
    kinds = {(d["kind"], d["name"]) for d in report["differences"]}
    assert ("pin", key) in kinds and ("weights", "model.safetensors") in kinds
    tensors = [d for d in report["differences"] if d["kind"] == "tensor"]
    assert tensors, report
    for t in tensors:
        assert 0 < t["stats"]["differing"] <= t["stats"]["elements"] and t["stats"]["max_abs_diff"] > 0
    loss = [d for d in report["differences"] if d["kind"] == "loss" and d["name"].startswith("step ")]
    assert len(loss) == 1 and loss[0]["old"] != loss[0]["new"]
    logged = [json.loads(x)["step"] for x in (copy / "out" / "metrics.jsonl").read_text().splitlines()]
    assert int(loss[0]["name"].removeprefix("step ")) in logged  # named by the step the metrics file uses
    assert report["hints"] and "pins" in report["hints"][0]


def test_capability_this_cpu_lacks_exits_3_before_any_training(copy: Path) -> None:
    lock = copy / "out" / "repro.lock"

    def to_sve(d: dict[str, Any]) -> None:  # a consistent lock, as an Arm SVE machine would write it (build=native)
        d["build"]["cpu_capability"] = d["build"]["flags"]["cpu_capability"] = "sve256"
        resolved = d["inputs"]["config"]["resolved"]["build"]
        resolved["cpu_capability"] = "sve256"
        for pins in (d["build"], resolved):
            pins.update(profile="native", kernels="vendor")

    edit_lock(lock, to_sve, redigest=True)
    work = copy.parent / "work"
    r = verify(lock, "--work-dir", str(work), cwd=copy)
    assert_user_error(r, 3, "sve256")
    assert not (work / "out").exists()
    ok = verify(lock, "--inputs-only", cwd=copy)  # nothing is rebuilt, so the pin is only a note
    assert ok.code == 0 and "cpu_capability" in ok.stdout


def _other_toolchain(d: dict[str, Any]) -> None:
    """The lock as if built with another patch release of a recorded package."""
    d["toolchain"]["distributions"]["safetensors"] = "0.7.9"


def test_toolchain_drift_with_the_same_bits_is_a_note(copy: Path) -> None:
    lock = copy / "out" / "repro.lock"
    edit_lock(lock, _other_toolchain)
    code, report = verify_json(lock, cwd=copy)
    assert code == 0 and report["rebuild"]["performed"], report
    assert ("toolchain", "distribution", "safetensors", "0.7.9") in \
        [(n["section"], n["kind"], n["name"], n["old"]) for n in report["notes"]]


def test_toolchain_drift_with_other_bits_exits_3_naming_it(copy: Path) -> None:
    lock = copy / "out" / "repro.lock"

    def drift_and_other_bits(d: dict[str, Any]) -> None:
        _other_toolchain(d)
        d["outputs"]["final_loss"] = 0.5  # what that toolchain's weights would have given

    edit_lock(lock, drift_and_other_bits)
    r = verify(lock, cwd=copy)
    assert r.code == 3, (r.stdout, r.stderr)
    assert "TOOLCHAIN MISMATCH" in r.stdout and "distribution changed  safetensors  '0.7.9'" in r.stdout
    assert "--toolchain recreate" in r.stdout


# --- weights files --------------------------------------------------------------------------------


def _tensor_at(path: Path, offset: int) -> str:
    """Which tensor holds file byte `offset`, read from the safetensors header by hand."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    for name, info in header.items():
        if name != "__metadata__" and 8 + n + info["data_offsets"][0] <= offset < 8 + n + info["data_offsets"][1]:
            return str(name)
    raise AssertionError(f"offset {offset} is in no tensor")


def test_weights_with_one_flipped_byte(trained: Path, tmp_path: Path) -> None:
    weights = tmp_path / "downloaded.safetensors"
    raw = bytearray((trained / "out" / "model.safetensors").read_bytes())
    offset = len(raw) - 100
    raw[offset] ^= 0x01
    weights.write_bytes(bytes(raw))
    code, report = verify_json(trained / "out" / "repro.lock", "--inputs-only", "--weights", str(weights),
                               cwd=tmp_path)
    assert code == 1
    got = [(d["kind"], d["name"]) for d in report["differences"]]
    assert got == [("weights", str(weights)), ("tensor", _tensor_at(weights, offset))]
    assert any("download it again" in h for h in report["hints"])
    honest = verify(trained / "out" / "repro.lock", "--inputs-only", "--weights",
                    str(trained / "out" / "model.safetensors"), cwd=tmp_path)
    assert honest.code == 0 and "identical to the lock" in honest.stdout


def test_weights_with_a_broken_header(trained: Path, tmp_path: Path) -> None:
    weights = tmp_path / "broken.safetensors"
    raw = bytearray((trained / "out" / "model.safetensors").read_bytes())
    raw[10] = 0xFF  # inside the JSON header: no longer UTF-8
    weights.write_bytes(bytes(raw))
    code, report = verify_json(trained / "out" / "repro.lock", "--inputs-only", "--weights", str(weights),
                               cwd=tmp_path)
    assert code == 1
    [d] = report["differences"]
    assert d["kind"] == "weights" and "not readable as safetensors" in d["detail"]


# --- unusable input: exit 2 ----------------------------------------------------------------------


def _edited(change: Any) -> Any:
    def apply(text: str) -> str:
        data = json.loads(text)
        change(data)
        return json.dumps(data)
    return apply


@pytest.mark.parametrize(("tamper", "needle"), [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (_edited(lambda d: d.pop("outputs")), "'outputs' is a required property"),
    (_edited(lambda d: d["build"].update(threads="two")), "field 'build.threads'"),
    (_edited(lambda d: d["inputs"]["data"]["files"][0].pop("hashes")), "inputs.data.files.0"),
    (_edited(lambda d: d.update(version=4)), "version 4 is newer than this repro"),
    (_edited(lambda d: d.update(version="1")), "field 'version'"),
])
def test_unusable_lock_exits_2_with_one_line(copy: Path, tamper: Any, needle: str) -> None:
    lock = copy / "out" / "repro.lock"
    lock.write_text(tamper(lock.read_text()))
    assert_user_error(verify(lock, cwd=copy), 2, needle)


def test_missing_data_exits_2(copy: Path) -> None:
    shutil.rmtree(copy / "data")
    r = verify(copy / "out" / "repro.lock", "--json", cwd=copy)
    assert_user_error(r, 2, "data/digits")
    envelope = json.loads(r.stdout)
    assert envelope["result"] is None and envelope["exit_code"] == 2 and "data/digits" in envelope["error"]


def test_missing_lockfile_exits_2(tmp_path: Path) -> None:
    assert_user_error(verify(tmp_path / "nope.lock", cwd=tmp_path), 2, "no such lockfile")


AUDIT = """
import json, os, sys
opened = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        opened.append(os.path.realpath(os.fsdecode(args[0])))
sys.addaudithook(hook)
from repro.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    json.dump(opened, fh)
sys.exit(code)
"""


@pytest.mark.parametrize("where", ["files-relative", "files-absolute", "config-relative", "config-absolute",
                                   "symlink"])
def test_paths_escaping_the_root_exit_2_and_nothing_outside_is_read(copy: Path, tmp_path: Path, where: str) -> None:
    secret_dir = tmp_path / "outside"
    secret_dir.mkdir()
    secret = secret_dir / "secret.csv"
    shutil.copy(copy / "data" / "digits" / "part-1.csv", secret)
    lock = copy / "out" / "repro.lock"
    relative = os.path.relpath(secret, copy)  # ../outside/secret.csv
    bad = str(secret) if where.endswith("absolute") else relative
    if where.startswith("files"):
        edit_lock(lock, lambda d: d["inputs"]["data"]["files"][0].update(path=bad))
    elif where.startswith("config"):
        edit_lock(lock, lambda d: d["inputs"]["config"]["resolved"]["data"].update(data_files=[bad]), redigest=True)
    else:
        link = copy / "data" / "digits" / "part-1.csv"
        link.unlink()
        link.symlink_to(secret)
    script = tmp_path / "audit.py"
    script.write_text(AUDIT)
    log = tmp_path / "opened.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(script), str(log), "verify", "--quiet", str(lock)], cwd=copy, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "escapes the project root" in proc.stderr or "outside the project root" in proc.stderr, proc.stderr
    opened = json.loads(log.read_text())
    assert opened, "the audit hook saw nothing: the check below would be vacuous"
    assert not [p for p in opened if p.startswith(str(secret_dir.resolve()))]


def test_consistent_lock_whose_weights_were_built_otherwise(copy: Path, pin_change: tuple[str, Any]) -> None:
    """Inputs and pins all agree, yet the lock's weights came from another build (one pin value, it
    claims another that gives other bits). The report must reach the tensors and the step."""
    key, value = pin_change
    lock = copy / "out" / "repro.lock"

    def claim_the_other_value(d: dict[str, Any]) -> None:
        d["build"][key] = d["build"]["flags"][key] = value
        d["inputs"]["config"]["resolved"]["build"][key] = value
        d["build"]["env"] = pinned_variables(Pins(**{k: d["build"][k] for k in PIN_KEYS}))

    edit_lock(lock, claim_the_other_value, redigest=True)
    assert verify(lock, "--inputs-only", cwd=copy).code == 0  # nothing to see in the inputs
    r = verify(lock, cwd=copy)
    assert r.code == 1, r.stdout + r.stderr
    out = r.stdout
    assert "rebuild    " in out and "in a fresh process" in out
    assert "outputs:" in out and "inputs:" not in out
    assert "tensor       changed  net.0.weight" in out and "elements differ, max abs diff" in out
    assert "(first differing logged step" in out or "(first logged step already differs)" in out
    # The hint names the step; its cause depends on whether this machine built the lock (run.json).
    assert "hint: inputs" in out and "match" in out and "yet training diverges at step" in out
