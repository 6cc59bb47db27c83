"""Sign a release folder: model.safetensors, repro.lock, and the card, plot, rebuild config and
provenance when present. Writes a Sigstore bundle (default model.sig in the folder) via OpenSSF
model-signing. PATH is the release folder or its repro.lock.

Offline with a key:   repro sign out/digits --key key.pem
Keyless (Sigstore, needs the network and an OIDC login):   repro sign out/digits --keyless
Make a key pair:  openssl ecparam -name prime256v1 -genkey -noout -out key.pem
                  openssl ec -in key.pem -pubout -out pub.pem
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from repro.commands import Outcome, add_release_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_release_argument(p)
    p.add_argument("--key", help="EC private key (PEM) to sign with")
    p.add_argument("--signature", help="where to write the bundle (default: model.sig in the release folder)")
    p.add_argument("--password-env", metavar="VAR", help="environment variable holding the key's password")
    p.add_argument("--keyless", action="store_true", help="sign with Sigstore (network, OIDC login) instead of a key")
    p.add_argument("--staging", action="store_true", help="with --keyless: use Sigstore's staging instance")


def run(args: argparse.Namespace) -> Outcome:
    from repro.errors import UserInputError
    from repro.lock.release_folder import resolve_release
    from repro.trust.signing import sign_release

    if args.key and args.keyless:
        raise UserInputError("--key and --keyless exclude each other; pick one")
    password = None
    if args.password_env:
        if args.password_env not in os.environ:
            raise UserInputError(f"--password-env {args.password_env}: no such environment variable")
        password = os.environ[args.password_env]
    report = sign_release(resolve_release(args.release).folder, Path(args.signature) if args.signature else None,
                          Path(args.key) if args.key else None, password, args.keyless, args.staging)
    lines = [f"signature    {report.signature}  ({report.method})"]
    lines += [f"signed       {name:<24} sha256 {digest}" for name, digest in sorted(report.files.items())]
    if report.not_covered:
        lines.append(f"not signed   {', '.join(report.not_covered)}")
    return Outcome(report.to_json(), "\n".join(lines) + "\n")
