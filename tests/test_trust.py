"""End to end: sign, verify-signature, attest, audit and card on a real trained release.

One module-scoped project (a git repository) is trained twice: as a release, and
as its rebuild by the commands on the release's card; every test works on a copy
of the release folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import DIGITS, EMBEDDED_CONFIGS, REPO, TINY, run_repro, sha256_file, without_run_details
from test_provenance import SCHEMA, validate_statement

from repro.canonical import canonical_json, compact_json, sha256_bytes
from repro.lock import lockfile
from repro.trust.attestation import RECORD_NAME, record_verification
from repro.trust.signing import SignatureMismatch, verify_signature

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DATA_REL = "repro/examples/digits/digits.csv"


@dataclass(frozen=True)
class Built:
    project: Path
    release: Path   # project/out/release: as `repro train` wrote it
    rebuild: Path   # project/rebuilt: a second, independent build of the same config, by the card's commands
    signed: Path    # base/signed: the release plus provenance and card, signed by the publisher
    key: Path
    pub: Path
    other_pub: Path
    card_rebuild: subprocess.CompletedProcess[str]  # the card's rebuild commands, run to make `rebuild`


def _git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _openssl_keypair(folder: Path, name: str) -> tuple[Path, Path]:
    """The key commands the `repro sign` help text documents."""
    key, pub = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    return key, pub


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("trust")
    project = base / "project"
    shutil.copytree(EMBEDDED_CONFIGS, project / "configs", ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    (project / DATA_REL).parent.mkdir(parents=True)
    shutil.copy2(DIGITS, project / DATA_REL)
    (project / ".gitignore").write_text("out/\n")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "digits project")
    r = run_repro(["train", "--quiet", *TINY, "code.include=[configs/**/*.yaml]", "out_dir=out/release"], cwd=project)
    assert r.code == 0, r.stderr
    keys = base / "keys"
    keys.mkdir()
    key, pub = _openssl_keypair(keys, "publisher")
    _, other_pub = _openssl_keypair(keys, "stranger")
    signed = base / "signed"
    shutil.copytree(project / "out" / "release", signed)
    for args in (["attest", str(signed)], ["card", str(signed)], ["sign", str(signed), "--key", str(key)]):
        r = run_repro(args, cwd=base)
        assert r.code == 0, r.stderr
    # The rebuild: the card's own commands, run from the project root, train the config again into
    # project/rebuilt and check its bytes (test_card_rebuild_commands_rebuild reads how they went).
    card_rebuild = _run_card_rebuild(signed, project, base / "bin")
    return Built(project, project / "out" / "release", project / "rebuilt", signed, key, pub, other_pub, card_rebuild)


def _run_card_rebuild(release: Path, project: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    """The shell block under the card's "## Rebuild", run from the project root with `repro` on PATH."""
    card = (release / "README.md").read_text()
    block = card.split("## Rebuild", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    bin_dir.mkdir()
    shim = bin_dir / "repro"  # `repro` on PATH, running this checkout
    shim.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m repro \"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RELEASE": str(release)}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def release(built: Built, tmp_path: Path) -> Path:
    """A private copy of the signed release folder, for a test to spoil."""
    folder = tmp_path / "release"
    shutil.copytree(built.signed, folder)
    return folder


def _verify(folder: Path, pub: Path, *extra: str) -> tuple[int, str]:
    r = run_repro(["verify-signature", str(folder), "--public-key", str(pub), *extra], cwd=folder.parent)
    return r.code, r.stdout + r.stderr


# 1. A signed release verifies.

def test_signed_release_verifies(built: Built, release: Path) -> None:
    code, out = _verify(release, built.pub)
    assert code == 0, out
    for name in ("model.safetensors", "repro.lock", "README.md", "loss.png", "rebuild.yaml", "provenance.intoto.json"):
        assert f"verified     {name:<24} sha256 {sha256_file(release / name)}" in out
    assert "not covered  metrics.jsonl, run.json" in out
    report = verify_signature(release, public_key=built.pub)  # the API `repro verify` calls
    assert report.files["model.safetensors"] == sha256_file(release / "model.safetensors")
    envelope = json.loads((release / "model.sig").read_text())["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert {r["name"]: r["digest"] for r in statement["predicate"]["resources"]} == report.files


# 2. Tampering is caught, naming the file.

def _flip_middle_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["model.safetensors", "repro.lock", "README.md", "provenance.intoto.json"])
def test_a_flipped_byte_fails_naming_the_file(built: Built, release: Path, name: str) -> None:
    _flip_middle_byte(release / name)
    code, out = _verify(release, built.pub)
    assert code == 1
    assert f"error: {name}: modified after signing: sha256 is {sha256_file(release / name)[:12]}" in out
    with pytest.raises(SignatureMismatch) as info:
        verify_signature(release, public_key=built.pub)
    assert info.value.subject == name


def test_missing_and_unsigned_release_files_fail(built: Built, release: Path) -> None:
    (release / "loss.png").unlink()
    code, out = _verify(release, built.pub)
    assert code == 1 and "loss.png: signed but missing" in out
    other = release.parent / "late-card"
    shutil.copytree(release, other)
    (other / "README.md").unlink()
    for args in (["sign", str(other), "--key", str(built.key)], ["card", str(other)]):
        assert run_repro(args, cwd=other.parent).code == 0
    code, out = _verify(other, built.pub)
    assert code == 1 and "README.md: present but not covered by model.sig" in out


# 3. Keys are checked; so is the bundle.

def test_wrong_public_key_fails(built: Built, release: Path) -> None:
    code, out = _verify(release, built.other_pub)
    assert code == 1 and "model.sig was signed with a different key" in out


def _forge_payload(bundle: dict) -> None:
    """Claim other weights in the signed statement without re-signing it."""
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "00" * 32
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()


def _flip_signature(bundle: dict) -> None:
    sig = base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"])
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig[:-1] + bytes([sig[-1] ^ 1])).decode()


@pytest.mark.parametrize(("corrupt", "needle"), [
    (_forge_payload, "model.sig: signature does not verify"),
    (_flip_signature, "model.sig: signature does not verify"),
    (lambda b: b.pop("verificationMaterial"), "model.sig: not a valid signature bundle"),
    (None, "model.sig: not a valid signature bundle"),  # truncated file
])
def test_corrupted_bundle_fails(built: Built, release: Path, corrupt: Callable[[dict], None] | None,
                                needle: str) -> None:
    sig = release / "model.sig"
    if corrupt is None:
        sig.write_bytes(sig.read_bytes()[:200])
    else:
        bundle = json.loads(sig.read_text())
        corrupt(bundle)
        sig.write_text(json.dumps(bundle))
    code, out = _verify(release, built.pub)
    assert code == 1 and needle in out, out


def test_unusable_keys_are_input_errors(built: Built, release: Path) -> None:
    code, out = _verify(release, built.key)  # a private key where the public one belongs
    assert code == 2 and "not a usable EC public key" in out
    code, out = _verify(release, release / "nope.pem")
    assert code == 2 and "nope.pem: no such public key file" in out
    r = run_repro(["sign", str(release), "--key", str(built.pub)], cwd=release.parent)
    assert r.code == 2 and "not a usable EC private key" in r.stderr
    assert "Traceback" not in r.stderr + out


# 4. Provenance is valid and stable across a rebuild.

def test_provenance_is_valid_and_stable_across_a_rebuild(built: Built, release: Path, tmp_path: Path) -> None:
    rebuild = tmp_path / "rebuild"
    shutil.copytree(built.rebuild, rebuild)
    assert run_repro(["attest", str(rebuild)], cwd=tmp_path).code == 0
    raw = (release / "provenance.intoto.json").read_bytes()
    ours, theirs = json.loads(raw), json.loads((rebuild / "provenance.intoto.json").read_bytes())
    assert raw == canonical_json(ours)
    jsonschema.Draft202012Validator(SCHEMA).validate(ours)
    validate_statement(ours)
    assert canonical_json(without_run_details(ours)) == canonical_json(without_run_details(theirs))
    assert ours["subject"][0]["digest"]["sha256"] == sha256_file(release / "model.safetensors")
    deps = {d["name"]: d for d in ours["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps[DATA_REL]["digest"]["sha256"] == sha256_file(built.project / DATA_REL)
    # in-toto dirHash, by its spec's recipe: sha256 over `sha256sum` lines of the sorted files
    line = f"{sha256_file(built.project / DATA_REL)}  {DATA_REL}\n".encode()
    assert deps["data"]["digest"]["dirHash"] == hashlib.sha256(line).hexdigest()
    assert deps["code"]["digest"]["gitCommit"] == _git(built.project, "rev-parse", "HEAD")
    assert deps["configs/train.yaml"]["digest"]["sha256"] == sha256_file(built.project / "configs" / "train.yaml")
    byproducts = {b["name"]: b for b in ours["predicate"]["runDetails"]["byproducts"]}
    assert byproducts["run.json"]["annotations"]["hostname"]
    assert byproducts["repro.lock"]["digest"]["sha256"] == sha256_file(release / "repro.lock")


def test_attest_refuses_weights_the_lock_does_not_describe(built: Built, tmp_path: Path) -> None:
    folder = tmp_path / "swapped"
    shutil.copytree(built.release, folder)
    shutil.copy2(built.release / "metrics.jsonl", folder / "model.safetensors")
    r = run_repro(["attest", str(folder)], cwd=tmp_path)
    assert r.code == 1 and "model.safetensors: sha256 is" in r.stderr
    assert not (folder / "provenance.intoto.json").exists()


# 5. Audit verdicts follow their inputs.

def _audit(lock: Path, *extra: str) -> dict:
    r = run_repro(["audit", str(lock), "--json", *extra], cwd=lock.parent)
    assert r.code == 0, r.stderr
    result: dict = json.loads(r.stdout)["result"]
    return result


def _relicensed(built: Built, dest: Path, **release: str | None) -> Path:
    """The release's lock with other `release` terms (config digest recomputed, so it stays a valid lock)."""
    dest.mkdir()
    lock = lockfile.read(built.release / "repro.lock")
    lock["inputs"]["config"]["resolved"]["release"].update(release)
    lock["inputs"]["config"]["sha256"] = sha256_bytes(compact_json(lock["inputs"]["config"]["resolved"]))
    lockfile.write(dest / "repro.lock", lock)
    shutil.copy2(built.release / "model.safetensors", dest / "model.safetensors")
    return dest / "repro.lock"


def _record_rebuild(built: Built, folder: Path) -> None:
    """What `repro verify` does on success: the rebuild's bytes equal the release's, so record it."""
    lock_sha = sha256_file(folder / "repro.lock")
    rebuilt = sha256_file(built.rebuild / "model.safetensors")
    identical = (rebuilt == sha256_file(folder / "model.safetensors")
                 and (built.rebuild / "repro.lock").read_bytes() == (built.release / "repro.lock").read_bytes())
    record_verification(folder / RECORD_NAME, lock_sha, rebuilt, identical, {"rebuild": "rebuilt"})


def test_audit_free_model_then_reproducible(built: Built, release: Path) -> None:
    before = _audit(release / "repro.lock")["frameworks"]
    assert before["debian_ml_policy"]["verdict"] == "Free Model"
    assert before["osi_osaid_1_0"]["verdict"] == "Open Source AI"
    assert before["reproducible"]["verdict"] == "no"
    _record_rebuild(built, release)
    after = _audit(release / "repro.lock")["frameworks"]
    assert after["reproducible"]["verdict"] == "self-reported"  # unsigned: anyone could have written it
    assert "verification.json: rebuilt bit-identically (self-reported: unsigned)" in after["reproducible"]["reasons"][1]
    table = run_repro(["audit", str(release)], cwd=release.parent).stdout
    assert [ln.split()[:3] for ln in table.splitlines()[2:6]] == [
        ["Debian", "ML-Policy", "Free"], ["OSI", "OSAID", "1.0"], ["LF", "AI", "MOF"],
        ["Reproducible", "self-reported", "a"]]


def test_audit_dvc_private_and_non_free(built: Built, tmp_path: Path) -> None:
    dvc = _relicensed(built, tmp_path / "dvc", data_location="dvc", data_url="s3://bucket/digits")
    assert _audit(dvc)["frameworks"]["debian_ml_policy"]["verdict"] == "Free Model"
    private = _relicensed(built, tmp_path / "private", data_location="private")
    _record_rebuild(built, private.parent)  # a record for *this* lock: reproducible, yet not free
    frameworks = _audit(private)["frameworks"]
    assert frameworks["debian_ml_policy"]["verdict"] == "ToxicCandy"
    assert frameworks["reproducible"]["verdict"] == "self-reported"  # unsigned
    non_free = _relicensed(built, tmp_path / "nc", weights_license="CC-BY-NC-4.0")
    shutil.copy2(private.parent / RECORD_NAME, non_free.parent / RECORD_NAME)  # a record for another lock
    frameworks = _audit(non_free)["frameworks"]
    assert frameworks["debian_ml_policy"]["verdict"] == "Non-free"
    assert frameworks["osi_osaid_1_0"]["verdict"] == "not Open Source AI"
    assert frameworks["reproducible"]["reasons"][0].startswith("verification.json: verifies another lock")


# 6. The card is complete, and its rebuild commands rebuild.

def test_card_is_complete_and_deterministic(built: Built, release: Path, tmp_path: Path) -> None:
    card = (release / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "apache-2.0" and "reproducible" in meta["tags"] and meta["metrics"] == ["accuracy"]
    lock = lockfile.read(release / "repro.lock")
    for needle in (sha256_file(release / "model.safetensors"), sha256_file(release / "repro.lock"),
                   sha256_file(built.project / DATA_REL), DATA_REL, "CC-BY-4.0", lock["inputs"]["config"]["sha256"],
                   "| Debian ML-Policy | **Free Model** |", "| threads | `2` |", "| package torch | `",
                   "![Training loss by step](loss.png)", "## Rebuild", "repro verify \"$RELEASE/repro.lock\""):
        assert needle in card, needle
    png = (release / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 600
    assert b"tIME" not in png and b"Software" not in png
    other = tmp_path / "rebuild"
    shutil.copytree(built.rebuild, other)
    assert run_repro(["card", str(other)], cwd=tmp_path).code == 0
    for name in ("README.md", "loss.png", "rebuild.yaml"):  # same lock, same card bytes
        assert (other / name).read_bytes() == (release / name).read_bytes(), name


def test_card_rebuild_commands_rebuild(built: Built, release: Path) -> None:
    proc = built.card_rebuild  # the fixture ran the signed release's card's block (`release` is a copy of it)
    assert (release / "README.md").read_bytes() == (built.signed / "README.md").read_bytes()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rebuilt/model.safetensors: OK" in proc.stdout and "rebuilt/repro.lock: OK" in proc.stdout
    assert sha256_file(built.project / "rebuilt" / "model.safetensors") == sha256_file(release / "model.safetensors")


def test_train_refuses_malformed_release_terms(built: Built) -> None:
    r = run_repro(["train", "--quiet", *TINY, "release.data_location=cloud", "out_dir=out/bad"], cwd=built.project)
    assert r.code == 2 and "config key release.data_location: 'cloud' is not one of" in r.stderr
    assert not (built.project / "out" / "bad").exists()
