"""The digests repro can record for a file: sha256 always, and the extras a config asks for. Never imports torch."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from repro.errors import ConfigError

# sha256 is always computed; these may be recorded beside it (config data.extra_hashes).
EXTRA_ALGORITHMS = ("blake2b", "blake2s", "blake3", "md5", "sha1", "sha3_256", "sha512")


def check_algorithms(extra: Iterable[str]) -> tuple[str, ...]:
    """("sha256", *extra) in a fixed order; unknown or unavailable names are a ConfigError."""
    names = sorted(set(extra) - {"sha256"})
    for name in names:
        if name not in EXTRA_ALGORITHMS:
            raise ConfigError(f"config key data.extra_hashes: {name!r} is not one of {list(EXTRA_ALGORITHMS)}")
        if name == "blake3":
            try:
                import blake3  # noqa: F401
            except ImportError:
                raise ConfigError("config key data.extra_hashes: blake3 needs the `blake3` package") from None
    return ("sha256", *names)


def new_hasher(name: str) -> Any:
    """A fresh hashlib-style object for `name` (one of sha256 and EXTRA_ALGORITHMS)."""
    if name == "blake3":
        from blake3 import blake3

        return blake3()
    # hashlib.sha256() and friends cost half of hashlib.new("sha256"): it matters per small file.
    return getattr(hashlib, name)() if name in hashlib.algorithms_guaranteed else hashlib.new(name)
