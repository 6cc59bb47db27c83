"""Start one build: hand its `BuildSpec` to a build child and return the child's report.

`repro train` and verify's rebuild both come here, so a build runs the same way
whoever asked for it. Under an outside launcher (torchrun, accelerate launch) this
process is one rank, and starts its rank's child the same way: the build process,
and with it the toolchain the lock records, is the same whoever launched it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from repro.builder.child import ChildOptions, run_child
from repro.builder.result import BuildReport
from repro.builder.spec import BuildSpec
from repro.train import distributed


def launch(spec: BuildSpec, options: ChildOptions | None = None, work_dir: Path | None = None) -> BuildReport | None:
    """Run `spec` in a build child (`repro.builder.build.build`); rank 0's report, else None.

    `work_dir` holds the child's spec, result and log (a temporary folder unless given).
    """
    started, options = time.monotonic(), options or ChildOptions()
    # Under an outside launcher this process is one rank: refuse a wrong count before starting anything.
    rank = distributed.check_world(spec.pins)[0] if distributed.under_launcher() else 0
    if work_dir is not None:
        report = run_child(spec.to_json(), spec.pins, work_dir, quiet=spec.quiet, options=options)
    else:
        with tempfile.TemporaryDirectory(prefix="repro-launch-") as tmp:
            report = run_child(spec.to_json(), spec.pins, Path(tmp), quiet=spec.quiet, options=options)
    if rank != 0 or report is None:
        return None
    # The time the user waited, child start-up included.
    return replace(BuildReport.from_json(report), seconds=time.monotonic() - started)
