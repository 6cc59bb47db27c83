"""Print, check or write the fingerprint of repro's compiler modules.

The compiler is the part of repro that can decide a bit (see
`repro.environment.toolchain`); a lock records its version and the digests of the
modules a build imported. Two different compilers must never share a version,
so `tests/test_toolchain.py` compares the committed fingerprint with the source:

    python scripts/compiler_fingerprint.py          # differences, exit 1 if any
    python scripts/compiler_fingerprint.py --write  # after bumping repro.__version__

A change with the same version is refused by --write: bump `repro.__version__`
first. `--write --unreleased` overwrites it anyway, for a version that no lock
published yet (several changes before one release share one bump).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FINGERPRINT = REPO / "tests" / "fixtures" / "compiler_fingerprint.json"
sys.path.insert(0, str(REPO))

from repro import __version__  # noqa: E402
from repro.environment.toolchain import compiler_sources  # noqa: E402


def current() -> dict[str, Any]:
    """{version, modules: {path: sha256}} of the compiler in this checkout."""
    modules = {rel: hashlib.sha256((REPO / rel).read_bytes()).hexdigest() for rel in compiler_sources()}
    return {"version": __version__, "modules": modules}


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The compiler modules added, removed or changed between two fingerprints."""
    a, b = old["modules"], new["modules"]
    return sorted([f"added {p}" for p in b.keys() - a.keys()] + [f"removed {p}" for p in a.keys() - b.keys()]
                  + [f"changed {p}" for p in a.keys() & b.keys() if a[p] != b[p]])


def main(argv: list[str]) -> int:
    old = json.loads(FINGERPRINT.read_text(encoding="utf-8")) if FINGERPRINT.is_file() else {"version": None,
                                                                                              "modules": {}}
    new = current()
    diff = changes(old, new)
    if "--write" in argv:
        if diff and old["version"] == new["version"] and "--unreleased" not in argv:
            print(f"the compiler changed ({len(diff)} modules) but repro is still {new['version']}: "
                  "bump repro.__version__ first", file=sys.stderr)
            return 1
        FINGERPRINT.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {FINGERPRINT.relative_to(REPO)} (repro {new['version']}, {len(new['modules'])} modules)")
        return 0
    for line in diff:
        print(line)
    if old["version"] != new["version"]:
        print(f"version {old['version']} -> {new['version']}")
    return 1 if diff or old["version"] != new["version"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
