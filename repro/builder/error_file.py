"""The child result file: how a build child and a stage child answer their parent.

One JSON object, written atomically: `exit_code` and `message` for a user-facing
failure (plus `signal` and `detail` for an interruption), or `exit_code` 0 and the
build's `report`. The parent turns a failure back into the same typed error
(`repro.builder.child.child_error`, `raise_interrupted`) and hands a report to its
caller. Kept apart from the launcher so that a stage child, which imports as little
of repro as it can (its record lists the repro modules it loaded), writes the very
same file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from repro.canonical import atomic_write_json
from repro.errors import Interrupted, ReproError


def write_error(path: Path, exc: ReproError | Interrupted) -> int:
    """In a child: leave a user-facing failure at `path` for the parent to raise again; return its exit code.

    An interruption also leaves its signal and where it stopped (`detail`), which
    the parent's own `Interrupted` repeats.
    """
    result: dict[str, Any] = {"exit_code": exc.exit_code, "message": str(exc)}
    if isinstance(exc, Interrupted):
        result.update(signal=exc.signum, detail=exc.detail)
    atomic_write_json(path, result)
    return exc.exit_code


def write_report(path: Path, report: object) -> None:
    """In a build child: its report, for the parent (`repro.builder.child.run_child` returns it)."""
    atomic_write_json(path, {"exit_code": 0, "report": report})


def read_result(path: Path) -> dict[str, Any]:
    """A child's result file: `{}` when it wrote none (it was killed) or wrote something unreadable."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return result if isinstance(result, dict) else {}
