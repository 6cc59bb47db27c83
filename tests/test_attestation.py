"""Verification records: written canonically, and accepted only for the exact lock and weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from signing_keys import make_keypair
from test_lockfile import sample_lock

from repro.canonical import canonical_json, compact_json, sha256_bytes
from repro.lock import lockfile
from repro.trust.attestation import RECORD_NAME, RECORD_SIGNATURE_NAME, check_record, record_verification

WEIGHTS = b"not really safetensors, but bytes with a digest"


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A lock whose weights digest is that of a real file beside it."""
    lock = sample_lock()
    lock["outputs"]["weights"]["hashes"]["sha256"] = hashlib.sha256(WEIGHTS).hexdigest()
    lockfile.write(tmp_path / "repro.lock", lock)
    (tmp_path / "model.safetensors").write_bytes(WEIGHTS)
    return tmp_path


def _record(folder: Path, identical: bool = True, key: Path | None = None, weights: bytes = WEIGHTS) -> Path:
    lock_sha = hashlib.sha256((folder / "repro.lock").read_bytes()).hexdigest()
    record_verification(folder / RECORD_NAME, lock_sha, hashlib.sha256(weights).hexdigest(), identical,
                        {"host": "test"}, signing_key=key)
    return folder / RECORD_NAME


def test_a_matching_record_is_valid_and_canonical(release: Path) -> None:
    path = _record(release)
    check = check_record(path, release / "repro.lock")
    assert check.valid and not check.signed and "unsigned" in check.reason
    raw = path.read_bytes()
    assert raw == canonical_json(json.loads(raw))
    assert json.loads(raw)["lock"]["sha256"] == hashlib.sha256((release / "repro.lock").read_bytes()).hexdigest()


@pytest.mark.parametrize(("spoil", "needle"), [
    (lambda f: (f / RECORD_NAME).unlink(), "no verification record"),
    (lambda f: (f / RECORD_NAME).write_text((f / RECORD_NAME).read_text().replace("true", "false")), "corrupted"),
    (lambda f: (f / RECORD_NAME).write_text("{"), "corrupted"),
    (lambda f: (f / "repro.lock").write_bytes((f / "repro.lock").read_bytes() + b" "), "verifies another lock"),
    (lambda f: (f / "model.safetensors").write_bytes(b"swapped"), "no longer has the locked sha256"),
])
def test_spoiled_records_do_not_count(release: Path, spoil: object, needle: str) -> None:
    _record(release)
    spoil(release)  # type: ignore[operator]
    check = check_record(release / RECORD_NAME, release / "repro.lock")
    assert not check.valid and needle in check.reason


def test_a_rebuild_that_differed_does_not_count(release: Path) -> None:
    assert "not bit-identical" in check_record(_record(release, identical=False), release / "repro.lock").reason
    other = check_record(_record(release, weights=b"other bytes"), release / "repro.lock")
    assert not other.valid and "differ from the locked" in other.reason


def test_signed_records_check_the_key(release: Path, tmp_path: Path) -> None:
    key, pub = make_keypair(tmp_path, "verifier")
    _, other_pub = make_keypair(tmp_path, "other")
    path = _record(release, key=key)
    assert (release / RECORD_SIGNATURE_NAME).is_file()
    check = check_record(path, release / "repro.lock", public_key=pub)
    assert check.valid and check.signed and "signed" in check.reason
    assert "another key" in check_record(path, release / "repro.lock", public_key=other_pub).reason
    record = json.loads(path.read_text())
    record["details"]["host"] = "forged"  # re-hash so only the signature can notice
    body = {k: v for k, v in record.items() if k != "sha256"}
    record["sha256"] = sha256_bytes(compact_json(body))
    path.write_bytes(canonical_json(record))
    assert check_record(path, release / "repro.lock").valid  # a hash alone cannot catch a forger...
    assert not check_record(path, release / "repro.lock", public_key=pub).valid  # ...the signature does


def test_unsigned_record_fails_when_a_key_is_required(release: Path, tmp_path: Path) -> None:
    key, pub = make_keypair(tmp_path, "verifier")
    _record(release, key=key)
    path = _record(release)  # rewriting without a key drops the stale signature
    assert not (release / RECORD_SIGNATURE_NAME).exists()
    assert "is not signed" in check_record(path, release / "repro.lock", public_key=pub).reason


def test_record_rejects_malformed_digests(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lock_bytes_sha256"):
        record_verification(tmp_path / RECORD_NAME, "ABC", "ab" * 32, True, {})
    assert not (tmp_path / RECORD_NAME).exists()
