"""The child error file: how a build child and a stage child hand a failure back to their parent.

One JSON object, written atomically: `exit_code` and `message`, plus `signal` and
`detail` for an interruption. The parent turns it back into the same typed error
(`repro.builder.child.child_error`, `raise_interrupted`). Kept apart from the
launcher so that a stage child, which imports as little of repro as it can (its
record lists the repro modules it loaded), writes the very same file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from repro.canonical import atomic_write_json
from repro.errors import Interrupted, ReproError


def write_error(spec: Mapping[str, Any], exc: ReproError | Interrupted) -> int:
    """In the child: leave a user-facing failure at `spec["error_path"]` for the parent to raise again; return
    its exit code.

    An interruption also leaves its signal and where it stopped (`detail`), which
    the parent's own `Interrupted` repeats.
    """
    report: dict[str, Any] = {"exit_code": exc.exit_code, "message": str(exc)}
    if isinstance(exc, Interrupted):
        report.update(signal=exc.signum, detail=exc.detail)
    atomic_write_json(Path(spec["error_path"]), report)
    return exc.exit_code
