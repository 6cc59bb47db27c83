"""Check a release folder's signature (the cheap check: no rebuild). Exit 1 names the file or key at fault.

PATH is the release folder or its repro.lock.

  repro verify-signature out/digits --public-key pub.pem
  repro verify-signature out/digits --identity me@example.org --oidc-issuer https://github.com/login/oauth
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.commands import Outcome, add_release_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_release_argument(p)
    p.add_argument("--signature", help="the bundle (default: model.sig in the release folder)")
    p.add_argument("--public-key", help="EC public key (PEM) of the signer")
    p.add_argument("--identity", help="keyless: the signer's identity (e-mail or workflow URI)")
    p.add_argument("--oidc-issuer", help="keyless: the OIDC issuer that vouched for the identity")
    p.add_argument("--staging", action="store_true", help="keyless: Sigstore's staging instance")


def run(args: argparse.Namespace) -> Outcome:
    from repro.lock.release_folder import resolve_release
    from repro.trust.signing import verify_signature

    report = verify_signature(resolve_release(args.release).folder, Path(args.signature) if args.signature else None,
                              Path(args.public_key) if args.public_key else None,
                              args.identity, args.oidc_issuer, args.staging)
    lines = [f"signature    {report.signature}  ({report.method}): good"]
    lines += [f"verified     {name:<24} sha256 {digest}" for name, digest in sorted(report.files.items())]
    if report.not_covered:
        lines.append(f"not covered  {', '.join(report.not_covered)}")
    return Outcome(report.to_json(), "\n".join(lines) + "\n")
