"""Sign and verify a release folder with OpenSSF model-signing. No torch.

The crypto and the bundle format are model-signing's (a Sigstore bundle holding
a DSSE-signed in-toto statement that lists every signed file with its sha256).
repro only decides *which* files a release signature covers, and turns the
library's failures into one line that names the file or the key at fault.

Covered: the weights and the lock always; the model card, its plot, the rebuild
config and the provenance statement when present. Not covered: run.json and
metrics.jsonl (machine facts and a log; the lock holds the loss trajectory),
checkpoints, verification records (signed on their own) and the signature itself.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.errors import MismatchError, UserInputError
from repro.filenames import CARD_NAME, LOCK_NAME, PLOT_NAME, PROVENANCE_NAME, REBUILD_NAME, SIGNATURE_NAME, WEIGHTS_NAME
from repro.records import JsonObject
from repro.safeio import loads, read_bytes
from repro.source.hashfile import sha256_checked

REQUIRED_FILES = (WEIGHTS_NAME, LOCK_NAME)
OPTIONAL_FILES = (CARD_NAME, PLOT_NAME, REBUILD_NAME, PROVENANCE_NAME)
# A signature bundle is a few KiB (a statement listing the release's files, a signature, a certificate);
# it is refused over this before model-signing sees it (docs/security.md, "Caps").
MAX_SIGNATURE_BYTES = 16 << 20


class SignatureMismatch(MismatchError):
    """The signature does not vouch for this folder; `subject` names the file or key at fault."""

    def __init__(self, subject: str, message: str) -> None:
        super().__init__(f"{subject}: {message}")
        self.subject = subject


@dataclass(frozen=True)
class SignatureReport:
    """What a good signature covers: file name -> sha256, as the signed statement lists them."""

    folder: Path
    signature: Path
    method: str  # "key" or "sigstore"
    files: dict[str, str]
    not_covered: tuple[str, ...]

    def to_json(self) -> JsonObject:
        return {"folder": str(self.folder), "signature": str(self.signature), "method": self.method,
                "files": dict(sorted(self.files.items())), "not_covered": list(self.not_covered)}


def covered_files(folder: Path) -> list[str]:
    """The release files a new signature of `folder` covers (required ones must exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"{folder}: not a folder (expected a release folder holding repro.lock)")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise UserInputError(f"{folder / name}: missing; a release to sign needs {' and '.join(REQUIRED_FILES)}")
    names = list(REQUIRED_FILES) + [n for n in OPTIONAL_FILES if (folder / n).exists()]
    for name in names:
        if (folder / name).is_symlink() or not (folder / name).is_file():
            raise UserInputError(f"{folder / name}: expected a regular file (not a link or folder) to sign")
    return names


def sign_release(folder: Path, signature: Path | None = None, private_key: Path | None = None,
                 password: str | None = None, keyless: bool = False, staging: bool = False) -> SignatureReport:
    """Sign the release files of `folder` into `signature` (default folder/model.sig).

    With `private_key` (an EC P-256/384/521 PEM) this works offline. `keyless`
    uses Sigstore's public-good instance instead, which needs the network and an
    OIDC login; it is supported but not exercised by the test suite.
    """
    hashing, signing = model_signing("hashing", "signing")
    folder = Path(folder)
    names = covered_files(folder)
    signature = Path(signature) if signature else folder / SIGNATURE_NAME
    ignored = sorted(p.name for p in folder.iterdir() if p.name not in names)
    hashing_config = hashing.Config().set_ignored_paths(paths=ignored, ignore_git_paths=True)
    config = signing.Config().set_hashing_config(hashing_config)
    if keyless:
        config = config.use_sigstore_signer(use_staging=staging)
    elif private_key is not None:
        config = key_signer(private_key, password, config)
    else:
        raise UserInputError("no signer: give --key PRIVATE.pem, or --keyless for Sigstore")
    tmp = signature.with_name(f".{signature.name}.tmp")
    try:
        config.sign(folder, tmp)  # model-signing writes in place: rename for atomicity
        tmp.replace(signature)
    except ValueError as exc:
        raise UserInputError(f"{folder}: cannot sign ({_first_line(exc)})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return SignatureReport(folder, signature, "sigstore" if keyless else "key",
                           _signed_digests(signature), tuple(ignored))


def verify_signature(folder: Path, signature: Path | None = None, public_key: Path | None = None,
                     identity: str | None = None, oidc_issuer: str | None = None,
                     staging: bool = False) -> SignatureReport:
    """Check `signature` against the files in `folder`; raise SignatureMismatch naming what failed.

    Key signatures need `public_key`; Sigstore (keyless) ones need the signer's
    `identity` and `oidc_issuer`. Files in the folder that the signature does not
    cover are ignored, except release files (the card, provenance, ...) that would
    otherwise pass unsigned: those fail.
    """
    (verifying,) = model_signing("verifying")
    folder = Path(folder)
    signature = Path(signature) if signature else folder / SIGNATURE_NAME
    if not folder.is_dir():
        raise UserInputError(f"{folder}: not a folder (expected the release folder that was signed)")
    _must_exist(signature, "signature")
    config = verifying.Config().set_ignore_unsigned_files(True)
    if public_key is not None:
        _must_exist(Path(public_key), "public key")
        try:
            config = config.use_elliptic_key_verifier(public_key=Path(public_key))
        except (ValueError, TypeError) as exc:
            raise UserInputError(f"{public_key}: not a usable EC public key ({_first_line(exc)})") from None
        method = "key"
    elif identity and oidc_issuer:
        config = config.use_sigstore_verifier(identity=identity, oidc_issuer=oidc_issuer, use_staging=staging)
        method = "sigstore"
    else:
        raise UserInputError("no verifier: give --public-key PUB.pem, or --identity and --oidc-issuer")
    # The bundle is read once, bounded (a regular file under MAX_SIGNATURE_BYTES), and model-signing is
    # handed a private copy of those bytes: it reads a bundle whole, and a 2 GB sparse model.sig took 4.2 GB.
    raw = read_bytes(signature, "signature bundle", MAX_SIGNATURE_BYTES, follow_links=True)
    with tempfile.TemporaryDirectory(prefix="repro-signature-") as tmp:
        checked = Path(tmp) / SIGNATURE_NAME
        checked.write_bytes(raw)
        try:
            config.verify(folder, checked)
        except Exception as exc:  # model-signing raises ValueError, KeyError, InvalidSignature, ...
            raise _explain(exc, folder, signature, public_key, raw) from None
    files = _signed_digests(signature, raw)
    for name in REQUIRED_FILES:
        if name not in files:
            raise SignatureMismatch(name, f"not covered by {signature.name}; it was not made by `repro sign`")
    for name in OPTIONAL_FILES:
        if name not in files and (folder / name).exists():
            raise SignatureMismatch(name, f"present but not covered by {signature.name} (added after signing?); "
                                          "sign the release again")
    not_covered = tuple(sorted(p.name for p in folder.iterdir()
                               if p.name not in files and p.resolve() != signature.resolve()))
    return SignatureReport(folder, signature, method, files, not_covered)


def key_signer(private_key: Path, password: str | None = None, config: Any = None) -> Any:
    """A model-signing signing config using this EC private key; UserInputError if it is missing or unusable.

    `repro verify --signing-key` calls this before its rebuild, so a bad key is named
    in seconds rather than after a training run.
    """
    (signing,) = model_signing("signing")
    _must_exist(Path(private_key), "private key")
    try:
        return (config or signing.Config()).use_elliptic_key_signer(private_key=Path(private_key), password=password)
    except (ValueError, TypeError) as exc:
        raise UserInputError(f"{private_key}: not a usable EC private key ({_first_line(exc)})") from None


def model_signing(*names: str) -> list[Any]:
    """Import model-signing submodules, or say how to install them (it is the `trust` extra)."""
    import importlib

    try:
        return [importlib.import_module(f"model_signing.{n}") for n in names]
    except ImportError as exc:
        raise UserInputError(f"signing needs model-signing and pyopenssl ({exc.name} is missing): "
                             "pip install 'repro[trust]'") from None


def _explain(exc: Exception, folder: Path, signature: Path, public_key: Path | None, raw: bytes) -> Exception:
    """Map a model-signing failure to the one-line reason a person needs."""
    text = str(exc)
    if text.startswith("Key mismatch"):
        return SignatureMismatch(str(public_key), f"{signature.name} was signed with a different key")
    if text.startswith(("Signature mismatch", "Cannot use")):
        # The envelope verified (model-signing checks it before hashing files), so
        # its file list is authentic: compare it with the folder ourselves.
        return _file_mismatch(folder, signature, raw)
    if type(exc).__name__ == "InvalidSignature":
        return SignatureMismatch(signature.name, f"signature does not verify with {public_key or 'the identity'}: "
                                                 "the bundle was altered or forged")
    return SignatureMismatch(signature.name, f"not a valid signature bundle ({type(exc).__name__}: "
                                             f"{_first_line(exc) or 'malformed'})")


def _file_mismatch(folder: Path, signature: Path, raw: bytes) -> SignatureMismatch:
    signed = _signed_digests(signature, raw)
    problems = []
    for name, digest in sorted(signed.items()):
        path = folder / name
        if not path.is_file():
            problems.append((name, "signed but missing from the folder"))
            continue
        actual = sha256_checked(path, "release file")  # a link or FIFO in a stranger's folder is refused
        if actual != digest:
            problems.append((name, f"modified after signing: sha256 is {actual[:12]}..., "
                                   f"the signature has {digest[:12]}..."))
    if not problems:
        return SignatureMismatch(folder.name, "does not match the signature")
    name, reason = problems[0]
    more = f" (and {len(problems) - 1} more: {', '.join(n for n, _ in problems[1:])})" if len(problems) > 1 else ""
    return SignatureMismatch(name, reason + more)


def _signed_digests(signature: Path, raw: bytes | None = None) -> dict[str, str]:
    """The file -> sha256 list inside the bundle's statement (authentic only after a verify); `raw`: its bytes,
    if already read."""
    try:
        if raw is None:
            raw = read_bytes(signature, "signature bundle", MAX_SIGNATURE_BYTES, follow_links=True)
        bundle = loads(raw, str(signature))
        payload = bundle["dsseEnvelope"]["payload"]
        statement: dict[str, Any] = loads(base64.b64decode(payload, validate=True), f"{signature} (payload)")
        resources = statement["predicate"]["resources"]
        return {str(r["name"]): str(r["digest"]) for r in resources}
    except (UserInputError, KeyError, TypeError, binascii.Error) as exc:
        raise SignatureMismatch(Path(signature).name, f"not a valid signature bundle ({type(exc).__name__})") from None


def _must_exist(path: Path, what: str) -> None:
    if not path.is_file():
        raise UserInputError(f"{path}: no such {what} file")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]
