"""What is installed in this interpreter, read once per process. No torch.

`importlib.metadata.packages_distributions()` reads every installed
distribution's file list (~0.37 s in the reference environment). A build asks
it three times (the config's `_target_` packages, a preprocess step's package,
the imported distributions); the installed set cannot change under a running
build, so it is read once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import metadata
from types import MappingProxyType


@functools.cache
def distributions_by_module() -> Mapping[str, tuple[str, ...]]:
    """Top-level import name -> the installed distributions that provide it (read-only)."""
    return MappingProxyType({top: tuple(names) for top, names in metadata.packages_distributions().items()})
