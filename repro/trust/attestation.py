"""Verification records: what `repro verify` leaves behind for `repro audit`. No torch.

A record says "this exact lock (sha256 of its bytes) was rebuilt into weights
with this sha256, and they were / were not bit-identical to the locked ones".
It carries a sha256 over its own canonical body, which catches corruption but
not forgery: anyone can recompute a hash. Signed with the release key
(`verification.sig`, model-signing over the single file), it also says who ran
the rebuild, and `repro audit --public-key` then insists on that signature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro import __version__
from repro.canonical import atomic_write_bytes, canonical_json, compact_json, sha256_bytes
from repro.errors import UserInputError
from repro.filenames import RECORD_NAME, WEIGHTS_NAME
from repro.lock import lockfile
from repro.source.hashing import sha256_file
from repro.trust.signing import model_signing

RECORD_SIGNATURE_NAME = "verification.sig"
RECORD_KIND = "repro.verification"
VERSION = 1


@dataclass(frozen=True)
class RecordCheck:
    """Whether a record backs the "Reproducible" mark for one lock, and why (not)."""

    valid: bool
    reason: str
    path: Path
    signed: bool
    record: dict[str, Any] | None


def default_record_path(lock_path: Path) -> Path:
    """Records live beside the lock they verify."""
    return Path(lock_path).parent / RECORD_NAME


def record_verification(out_path: Path, lock_bytes_sha256: str, weights_sha256: str, identical: bool,
                        details: dict[str, Any], signing_key: Path | None = None) -> dict[str, Any]:
    """Write a verification record atomically (and sign it when `signing_key` is given).

    `lock_bytes_sha256` is the sha256 of the lock file's bytes, `weights_sha256`
    that of the rebuilt weights. `details` is free-form JSON (machine, timings,
    first differing tensor...); it is not part of what the mark depends on.
    """
    for name, value in (("lock_bytes_sha256", lock_bytes_sha256), ("weights_sha256", weights_sha256)):
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(f"{name}: expected 64 lowercase hex digits, got {value!r}")
    body = {
        "version": VERSION, "kind": RECORD_KIND, "identical": bool(identical),
        "lock": {"sha256": lock_bytes_sha256}, "weights": {"sha256": weights_sha256},
        "verifier": {"repro": __version__}, "details": details,
    }
    record = {**body, "sha256": sha256_bytes(compact_json(body))}
    out_path = Path(out_path)
    atomic_write_bytes(out_path, canonical_json(record))
    sig = out_path.with_name(RECORD_SIGNATURE_NAME)
    if signing_key is not None:
        (signing,) = model_signing("signing")
        tmp = sig.with_name(f".{sig.name}.tmp")
        try:
            signer = signing.Config()
            signer.use_elliptic_key_signer(private_key=Path(signing_key)).sign(out_path, tmp)
            tmp.replace(sig)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        sig.unlink(missing_ok=True)  # an old signature would vouch for an older record
    return record


def check_record(record_path: Path, lock_path: Path, public_key: Path | None = None) -> RecordCheck:
    """Does the record at `record_path` show a bit-identical rebuild of `lock_path`?

    Checks, in order: the record parses and its own sha256 holds; it names this
    lock's bytes; it names the lock's weights digest; the rebuild was identical;
    the weights file beside the lock (if any) still has that digest; and, with
    `public_key`, that verification.sig verifies the record with that key.
    """
    record_path, lock_path = Path(record_path), Path(lock_path)

    def no(reason: str, record: dict[str, Any] | None = None, signed: bool = False) -> RecordCheck:
        return RecordCheck(False, reason, record_path, signed, record)

    if not record_path.is_file():
        return no("no verification record (run `repro verify` on this lock)")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        body = {k: v for k, v in record.items() if k != "sha256"}
        ok = record.get("kind") == RECORD_KIND and record.get("version") == VERSION
        ok = ok and record["sha256"] == sha256_bytes(compact_json(body))
        claimed_lock, claimed_weights = str(record["lock"]["sha256"]), str(record["weights"]["sha256"])
        identical = record["identical"] is True
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        return no(f"{record_path.name}: corrupted or not a repro verification record")
    lock_sha256 = sha256_file(lock_path)
    locked = lockfile.read(lock_path)["outputs"]["weights"]["hashes"]["sha256"]
    if claimed_lock != lock_sha256:
        return no(f"{record_path.name} verifies another lock (sha256 {claimed_lock[:12]}...)", record)
    if claimed_weights != locked:
        return no(f"{record_path.name}: rebuilt weights {claimed_weights[:12]}... differ from the "
                  f"locked {locked[:12]}...", record)
    if not identical:
        return no(f"{record_path.name}: the rebuild was not bit-identical", record)
    weights = lock_path.parent / WEIGHTS_NAME
    if weights.is_file() and sha256_file(weights) != locked:
        return no(f"{weights.name} beside the lock no longer has the locked sha256", record)
    sig = record_path.with_name(RECORD_SIGNATURE_NAME)
    signed = sig.is_file()
    if public_key is not None:
        if not signed:
            return no(f"{record_path.name} is not signed ({sig.name} missing) and --public-key asks for it", record)
        reason = _verify_record_signature(record_path, sig, Path(public_key))
        if reason:
            return no(reason, record, signed=True)
    how = "signed" if public_key is not None else ("signature not checked" if signed else "unsigned, hashed")
    return RecordCheck(True, f"rebuilt bit-identically ({record_path.name}, {how})", record_path, signed, record)


def _verify_record_signature(record: Path, sig: Path, public_key: Path) -> str | None:
    (verifying,) = model_signing("verifying")
    if not public_key.is_file():
        raise UserInputError(f"{public_key}: no such public key file")
    try:
        verifier = verifying.Config()
        verifier.use_elliptic_key_verifier(public_key=public_key).verify(record, sig)
    except Exception as exc:  # any failure means the signature does not vouch for this record
        if str(exc).startswith("Key mismatch"):
            return f"{sig.name} was made with another key than {public_key.name}"
        return f"{sig.name} does not verify {record.name} with {public_key.name} ({type(exc).__name__})"
    return None


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read ({exc.strerror})") from None
