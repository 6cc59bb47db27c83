"""Verification records: in-toto SLSA VSA v1 statements in DSSE envelopes, counted only when
they name this exact lock and weights, and only as evidence when a trusted key signed them."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from signing_keys import make_keypair
from test_lockfile import sample_lock

from repro.canonical import canonical_json, compact_json
from repro.cli import main
from repro.lock import lockfile
from repro.trust.attestation import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    RECORD_NAME,
    STATEMENT_TYPE,
    check_record,
    load_public_keys,
    record_verification,
)
from repro.trust.release_audit import audit_path

WEIGHTS = b"not really safetensors, but bytes with a digest"


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A lock whose weights digest is that of a real file beside it."""
    lock = sample_lock()
    lock["outputs"]["weights"]["hashes"]["sha256"] = hashlib.sha256(WEIGHTS).hexdigest()
    (tmp_path / "rel").mkdir()
    lockfile.write(tmp_path / "rel" / "repro.lock", lock)
    (tmp_path / "rel" / "model.safetensors").write_bytes(WEIGHTS)
    return tmp_path / "rel"


def _lock_sha(folder: Path) -> str:
    return hashlib.sha256((folder / "repro.lock").read_bytes()).hexdigest()


def _record(folder: Path, identical: bool = True, key: Path | None = None, weights: bytes = WEIGHTS,
            name: str = RECORD_NAME) -> Path:
    path = folder / name
    record_verification(path, _lock_sha(folder), hashlib.sha256(weights).hexdigest(), identical,
                        {"host": "test"}, signing_key=key, machine={"cpu_model": "Test CPU", "torch": "2.13.0"})
    return path


def _check(folder: Path, path: Path, keys: list[Path] | None = None):  # type: ignore[no-untyped-def]
    return check_record(path, _lock_sha(folder), hashlib.sha256(WEIGHTS).hexdigest(), load_public_keys(keys or []))


def test_a_record_is_a_vsa_v1_statement_in_a_dsse_envelope(release: Path) -> None:
    path = _record(release)
    raw = path.read_bytes()
    assert raw == canonical_json(json.loads(raw))
    envelope = json.loads(raw)
    assert envelope["payloadType"] == PAYLOAD_TYPE and envelope["signatures"] == []
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == STATEMENT_TYPE and statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"][0] == {"name": "repro.lock", "digest": {"sha256": _lock_sha(release)}}
    predicate = statement["predicate"]
    required = {"verifier", "timeVerified", "resourceUri", "policy", "verificationResult", "verifiedLevels"}
    assert required <= set(predicate)
    assert predicate["verificationResult"] == "PASSED" and predicate["verifier"]["id"].startswith("https://")
    check = _check(release, path)
    assert check.valid and check.self_reported and "self-reported: unsigned" in check.reason


@pytest.mark.parametrize(("spoil", "needle"), [
    (lambda f: (f / RECORD_NAME).write_text("{"), "not valid JSON"),
    (lambda f: (f / RECORD_NAME).write_text('{"payloadType": "x"}'), "not a DSSE envelope"),
    (lambda f: (f / "repro.lock").write_bytes((f / "repro.lock").read_bytes() + b" "), "verifies another lock"),
])
def test_spoiled_records_do_not_count(release: Path, spoil: object, needle: str) -> None:
    _record(release)
    spoil(release)  # type: ignore[operator]
    check = _check(release, release / RECORD_NAME)
    assert not check.valid and needle in check.reason


def test_a_rebuild_that_differed_does_not_count(release: Path) -> None:
    assert "FAILED" in _check(release, _record(release, identical=False)).reason
    other = _check(release, _record(release, weights=b"other bytes"))
    assert not other.valid and "differ from the locked" in other.reason


def test_signed_records_count_only_for_trusted_keys(release: Path, tmp_path: Path) -> None:
    key, pub = make_keypair(tmp_path, "rebuilder")
    _, other_pub = make_keypair(tmp_path, "other")
    path = _record(release, key=key)
    check = _check(release, path, [pub])
    assert check.valid and check.signers == ("rebuilder.pub.pem",)
    assert _check(release, path, [other_pub]).self_reported  # signed, but by no key you trust
    envelope = json.loads(path.read_text())  # forge the payload: the signature no longer covers it
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["timeVerified"] = "1970-01-01T00:00:00Z"
    envelope["payload"] = base64.b64encode(compact_json(statement)).decode()
    path.write_bytes(canonical_json(envelope))
    assert _check(release, path, [pub]).signers == ()


def test_audit_needs_trusted_signers_up_to_the_threshold(release: Path, tmp_path: Path) -> None:
    a, a_pub = make_keypair(tmp_path, "alice")
    b, b_pub = make_keypair(tmp_path, "bob")
    _record(release)
    assert audit_path(release / "repro.lock").reproducible.verdict == "self-reported"
    _record(release, key=a)
    (release / "verifications").mkdir()
    _record(release, key=b, name="verifications/bob.json")
    one = audit_path(release / "repro.lock", trusted_keys=[a_pub]).reproducible
    assert one.verdict == "yes" and "alice.pub.pem" in one.reasons[0] and "Test CPU" in one.reasons[1]
    assert audit_path(release / "repro.lock", trusted_keys=[a_pub, b_pub], threshold=2).reproducible.verdict == "yes"
    short = audit_path(release / "repro.lock", trusted_keys=[a_pub], threshold=2).reproducible
    assert short.verdict == "no" and "1 of the 2" in short.reasons[0]
    assert main(["audit", str(release), "--trusted-key", str(a_pub), "--trusted-key", str(b_pub),
                 "--threshold", "2"]) == 0


def test_swapped_weights_beside_the_lock_void_every_record(release: Path, tmp_path: Path) -> None:
    key, pub = make_keypair(tmp_path, "rebuilder")
    _record(release, key=key)
    (release / "model.safetensors").write_bytes(b"swapped")
    verdict = audit_path(release / "repro.lock", trusted_keys=[pub]).reproducible
    assert verdict.verdict == "no" and "no longer has the locked sha256" in verdict.reasons[0]


def test_record_rejects_malformed_digests(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lock_bytes_sha256"):
        record_verification(tmp_path / RECORD_NAME, "ABC", "ab" * 32, True, {})
    assert not (tmp_path / RECORD_NAME).exists()
