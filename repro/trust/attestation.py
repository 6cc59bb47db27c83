"""Verification records: what `repro verify` leaves behind for `repro audit`. No torch.

A record is a standard statement: an in-toto Statement v1 whose predicate is a
SLSA Verification Summary Attestation v1 (https://slsa.dev/verification_summary/v1),
saying "this lock (sha256 of its bytes) was rebuilt into weights with this
sha256, PASSED (bit-identical) or FAILED, by this verifier on this machine, at
this time". It is stored in a DSSE envelope (`payloadType`
application/vnd.in-toto+json); with a signing key the envelope carries an ECDSA
or Ed25519 signature over the DSSE pre-authentication encoding, otherwise none.

Anyone can write an unsigned record, so `repro audit` calls one "self-reported";
only signatures by keys the user names (`--trusted-key`) count as evidence.
Specified in docs/security.md ("Verification records").
"""

from __future__ import annotations

import base64
import binascii
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from repro import __version__
from repro.canonical import atomic_write_bytes, canonical_json, compact_json, sha256_bytes
from repro.environment.machine import cpu_model
from repro.errors import UserInputError
from repro.filenames import LOCK_NAME, RECORD_NAME, WEIGHTS_NAME
from repro.records import JsonObject, JsonValue
from repro.safeio import loads, printable, read_bytes
from repro.source.hashfile import sha256_checked

RECORDS_DIR = "verifications"  # more records beside the lock: one per rebuilder
MAX_RECORDS = 256
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
VERIFIER_ID = "https://repro.invalid/verifiers/repro-verify/v1"
POLICY_URI = "https://repro.invalid/policies/bit-identical-rebuild/v1"
LEVEL_PASSED = "REPRO_BIT_IDENTICAL"  # a custom SlsaResult (custom values must not start with SLSA_)
MACHINE_KEY = "https://repro.invalid/vsa/machine/v1"  # extension fields are named by URI
DETAILS_KEY = "https://repro.invalid/vsa/details/v1"


class Signature(TypedDict):
    keyid: str  # sha256 of the DER public key
    sig: str  # base64


class Envelope(TypedDict):
    """A DSSE envelope: the statement's bytes, base64, and the signatures over their PAE."""

    payloadType: str
    payload: str
    signatures: list[Signature]


@dataclass(frozen=True)
class RecordCheck:
    """One record judged against one lock: does it show a bit-identical rebuild, and who vouches?"""

    valid: bool  # names this lock and its weights, and PASSED
    reason: str
    path: Path
    signers: tuple[str, ...] = ()  # names of trusted keys whose signatures verify
    signatures: int = 0  # signatures in the envelope, verified or not
    machine: JsonObject = field(default_factory=dict)  # as the record says: read, never trusted
    time_verified: str = ""

    @property
    def self_reported(self) -> bool:
        return self.valid and not self.signers


def default_record_path(lock_path: Path) -> Path:
    """Records live beside the lock they verify."""
    return Path(lock_path).parent / RECORD_NAME


def record_paths(lock_path: Path) -> list[Path]:
    """verification.json and verifications/*.json beside the lock (those that exist, capped)."""
    folder = Path(lock_path).parent
    found = [folder / RECORD_NAME] if os.path.lexists(folder / RECORD_NAME) else []
    extra = folder / RECORDS_DIR
    if extra.is_dir() and not extra.is_symlink():
        found += sorted(p for p in extra.iterdir() if p.suffix == ".json")[:MAX_RECORDS]
    return found


def statement(lock_sha256: str, weights_name: str, weights_sha256: str, identical: bool,
              machine: Mapping[str, str], details: JsonObject) -> JsonObject:
    """The in-toto Statement v1 with a SLSA VSA v1 predicate for one rebuild."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": LOCK_NAME, "digest": {"sha256": lock_sha256}},
                    {"name": weights_name, "digest": {"sha256": weights_sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "verifier": {"id": VERIFIER_ID, "version": {"repro": __version__}},
            "timeVerified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "resourceUri": LOCK_NAME,
            "policy": {"uri": POLICY_URI},
            "verificationResult": "PASSED" if identical else "FAILED",
            "verifiedLevels": [LEVEL_PASSED] if identical else ["FAILED"],
            "slsaVersion": "1.0",
            MACHINE_KEY: machine,
            DETAILS_KEY: details,
        },
    }


def machine_facts(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Who rebuilt where: CPU model and toolchain (not hashed anywhere; shown by `repro audit`)."""
    from importlib import metadata

    cpu = cpu_model() or platform.machine()
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return {"cpu_model": cpu, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch_version, **(extra or {})}


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what a signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def record_verification(out_path: Path, lock_bytes_sha256: str, weights_sha256: str, identical: bool,
                        details: JsonObject, signing_key: Path | None = None,
                        weights_name: str = WEIGHTS_NAME, machine: Mapping[str, str] | None = None
                        ) -> Envelope:
    """Write a VSA in a DSSE envelope atomically, signed when `signing_key` (a PEM private key) is given."""
    for name, value in (("lock_bytes_sha256", lock_bytes_sha256), ("weights_sha256", weights_sha256)):
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(f"{name}: expected 64 lowercase hex digits, got {value!r}")
    body = compact_json(statement(lock_bytes_sha256, weights_name, weights_sha256, identical,
                                  machine if machine is not None else machine_facts(), details))
    signatures = [] if signing_key is None else [_sign(Path(signing_key), pae(PAYLOAD_TYPE, body))]
    envelope: Envelope = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(body).decode("ascii"),
                "signatures": signatures}
    atomic_write_bytes(Path(out_path), canonical_json(envelope))
    return envelope


def load_public_keys(paths: list[Path]) -> dict[str, tuple[str, Any]]:
    """keyid (sha256 of the DER public key) -> (the file's name, the key), for `--trusted-key`."""
    from cryptography.hazmat.primitives import serialization

    keys: dict[str, tuple[str, Any]] = {}
    for path in paths:
        raw = read_bytes(path, "public key", cap=1 << 20, follow_links=True)
        try:
            key = serialization.load_pem_public_key(raw)
        except (ValueError, TypeError) as exc:
            raise UserInputError(f"{printable(str(path))}: not a PEM public key ({exc})") from None
        keys[keyid(key)] = (Path(path).name, key)
    return keys


def keyid(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return sha256_bytes(der)


def check_record(record_path: Path, lock_sha256: str, locked_weights_sha256: str,
                 trusted: dict[str, tuple[str, Any]] | None = None) -> RecordCheck:
    """Judge one record: its statement must name this lock and weights and say PASSED;
    `signers` are the trusted keys whose signatures over it verify."""
    path = Path(record_path)

    def no(reason: str) -> RecordCheck:
        return RecordCheck(False, f"{printable(path.name)}: {reason}", path)

    try:
        envelope = loads(read_bytes(path, "verification record"), str(path))
        body = _payload(envelope)
        st = loads(body, f"{path} (payload)")
        pred = st["predicate"]
        ok = (st.get("_type") == STATEMENT_TYPE and st.get("predicateType") == PREDICATE_TYPE
              and isinstance(pred, dict))
        subjects = {s["name"]: s["digest"]["sha256"] for s in st["subject"] if isinstance(s, dict)}
        result = pred["verificationResult"]
    except UserInputError as exc:
        return no(str(exc).replace(str(path) + ": ", "", 1))
    except (KeyError, TypeError, AttributeError, ValueError):
        ok = False
    if not ok:
        return no("not an in-toto statement with a SLSA verification summary (VSA v1)")
    if subjects.get(LOCK_NAME) != lock_sha256:
        return no(f"verifies another lock (sha256 {str(subjects.get(LOCK_NAME))[:12]}...)")
    if locked_weights_sha256 not in subjects.values():
        return no(f"its rebuilt weights differ from the locked {locked_weights_sha256[:12]}...")
    if result != "PASSED":
        return no("the rebuild was not bit-identical (verificationResult FAILED)")
    signers = _verified_signers(envelope, body, trusted or {})
    noted = pred.get(MACHINE_KEY)
    machine: JsonObject = dict(noted) if isinstance(noted, dict) else {}
    sigs = envelope["signatures"]
    how = ("signed by " + ", ".join(signers)) if signers else (
        "self-reported: unsigned" if not sigs else "self-reported: signed by no key you trust")
    return RecordCheck(True, f"{printable(path.name)}: rebuilt bit-identically ({how})", path, tuple(signers),
                       len(sigs), machine, str(pred.get("timeVerified", "")))


def weights_beside_match(lock_path: Path, weights_rel: str, locked_sha256: str) -> str | None:
    """None if no weights file is beside the lock or it has the locked digest; else why not."""
    path = Path(lock_path).parent / weights_rel
    if not os.path.lexists(path):
        return None
    if sha256_checked(path, "weights file") != locked_sha256:  # a link or FIFO beside a stranger's lock: refused
        return f"{printable(weights_rel)} beside the lock no longer has the locked sha256"
    return None


def _payload(envelope: Any) -> bytes:
    if not isinstance(envelope, dict) or envelope.get("payloadType") != PAYLOAD_TYPE \
            or not isinstance(envelope.get("signatures"), list) or not isinstance(envelope.get("payload"), str):
        raise UserInputError("not a DSSE envelope of an in-toto statement")
    try:
        return base64.b64decode(envelope["payload"], validate=True)
    except (binascii.Error, ValueError):
        raise UserInputError("the DSSE payload is not base64") from None


def _verified_signers(envelope: Mapping[str, JsonValue], body: bytes,
                      trusted: dict[str, tuple[str, Any]]) -> list[str]:
    """Names of trusted keys with a valid signature (each key counted once, whatever its keyid hint)."""
    message = pae(PAYLOAD_TYPE, body)
    found: list[str] = []
    signatures = envelope["signatures"]
    if not isinstance(signatures, list):  # _payload checked it is
        return found
    for sig in signatures[:MAX_RECORDS]:
        if not isinstance(sig, dict) or not isinstance(sig.get("sig"), str):
            continue
        try:
            raw = base64.b64decode(sig["sig"], validate=True)
        except (binascii.Error, ValueError):
            continue
        for name, key in trusted.values():
            if name not in found and _verifies(key, raw, message):
                found.append(name)
    return found


def _verifies(key: Any, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def signing_key(private_key: Path) -> Any:
    """The EC or Ed25519 key records are signed with; UserInputError naming the file if it is unusable.

    `repro verify --signing-key` loads it before its rebuild, so a bad key costs seconds, not a training run.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    raw = read_bytes(private_key, "private key", cap=1 << 20, follow_links=True)
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise UserInputError(f"{printable(str(private_key))}: not a usable PEM private key ({exc})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise UserInputError(f"{printable(str(private_key))}: expected an EC or Ed25519 private key")
    return key


def _sign(private_key: Path, message: bytes) -> Signature:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = signing_key(private_key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(message, ec.ECDSA(hashes.SHA256()))
    else:
        sig = key.sign(message)
    return {"keyid": keyid(key.public_key()), "sig": base64.b64encode(sig).decode("ascii")}
