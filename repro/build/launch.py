"""Several processes: start them with torchrun, know which rank we are, stop all on a death.

`repro train build.world_size=N` spawns N ranks itself through
`torch.distributed.run` (torchrun), so users need not know the launcher; under an
outside launcher (`torchrun`, `accelerate launch`) each rank simply runs the build.
torchrun's agent stops every rank as soon as one dies, so a crash cannot hang the
others; repro turns its report into one line naming the rank.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from repro.canonical import atomic_write_json
from repro.environment.pins import Pins, pinned_environ
from repro.errors import TrainingFailed, from_exit_code

_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)[^\n]*", re.S)


def spawn(spec: dict[str, Any], pins: Pins) -> None:
    """Run `repro.build.run.rebuild_main(spec)` on `pins.world_size` ranks via torchrun.

    Raises the rank's own error (its exit code and message) or TrainingFailed
    naming the rank that died; torchrun has stopped the others by then.
    """
    from repro.source.inputs import PACKAGE_DIR

    with tempfile.TemporaryDirectory(prefix="repro-launch-") as tmp:
        spec = {**spec, "error_path": str(Path(tmp) / "error.json")}
        spec_path = Path(tmp) / "spec.json"
        atomic_write_json(spec_path, spec)
        env = pinned_environ(pins)
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_DIR.parent), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["TORCHELASTIC_ERROR_FILE"] = str(Path(tmp) / "elastic-error.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={pins.world_size}",
               "--max-restarts=0", "--monitor-interval=0.2", "-m", "repro.build.launch", str(spec_path)]
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if proc.returncode == 0:
            return
        error = Path(spec["error_path"])
        if error.is_file():
            import json

            info = json.loads(error.read_text(encoding="utf-8"))
            raise from_exit_code(int(info["exit_code"]), str(info["message"]))
        raise TrainingFailed(describe_failure(proc.stderr, pins.world_size))


def describe_failure(stderr: str, world_size: int) -> str:
    """One line from torchrun's report: which rank died, and how."""
    m = _ROOT_CAUSE.search(stderr)
    if not m:
        last = [ln for ln in stderr.splitlines() if ln.strip()][-1:] or ["no output"]
        return f"a rank of {world_size} failed; the run was stopped and no outputs were written ({last[0].strip()})"
    rank, code = int(m.group(1)), int(m.group(2))
    how = f"signal {-code}" if code < 0 else f"exit code {code}"
    try:
        import signal

        how = f"{signal.Signals(-code).name}" if code < 0 else how
    except ValueError:
        pass
    return (f"rank {rank} of {world_size} died ({how}); torchrun stopped the other ranks, "
            "no outputs were written (checkpoints, if any, can be resumed)")



if __name__ == "__main__":  # a rank started by torchrun in `spawn`
    from repro.build.run import rebuild_main

    sys.exit(rebuild_main(sys.argv[1]))
