"""verify's rebuild: train again in a fresh interpreter under the lock's pins alone.

A separate process is the only way to guarantee the pins: `ATEN_CPU_CAPABILITY`
is read once, when torch is first imported, and the verifier's own shell may
carry OMP_NUM_THREADS, MKL_* or CUDA_VISIBLE_DEVICES. The child runs
`repro.build.run.rebuild_main`, the same `run_build` that `repro train` uses.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from repro.canonical import atomic_write_json
from repro.environment.pins import Pins, pinned_environ
from repro.errors import EnvironmentMismatch, ReproError, TrainingFailed, from_exit_code
from repro.lock.diff import PIN_KEYS
from repro.source.inputs import PACKAGE_DIR

_CHILD = "import sys; from repro.build.run import rebuild_main; sys.exit(rebuild_main(sys.argv[1]))"


def rebuild_config(lock: dict[str, Any], world_size: int | None = None) -> tuple[dict[str, Any], Pins]:
    """The lock's resolved config with its build section's pins applied on top
    (and another world size, when the user asks for one)."""
    build = dict(lock["build"])
    if world_size is not None:
        build["world_size"] = world_size
    pins = Pins(**{key: build[key] for key in PIN_KEYS})
    resolved = copy.deepcopy(lock["inputs"]["config"]["resolved"])
    resolved["build"].update({key: build[key] for key in PIN_KEYS if key != "seed"})
    resolved["seed"] = build["seed"]
    return resolved, pins


def run_rebuild(lock: dict[str, Any], root: Path, work_dir: Path, quiet: bool, world_size: int | None = None) -> Path:
    """Train again in a fresh interpreter under the lock's pins; return the rebuilt out_dir.

    The child's environment is built from the pins alone (`pinned_environ`), so the
    verifier's OMP_NUM_THREADS, MKL_*, ATEN_CPU_CAPABILITY or CUDA_VISIBLE_DEVICES
    cannot reach it; it imports the same repro whose source was just hashed, and
    gets a datasets cache of its own so no stale cache can stand in for the data.
    """
    resolved, pins = rebuild_config(lock, world_size)
    out_dir, error_path = work_dir / "out", work_dir / "rebuild-error.json"
    error_path.unlink(missing_ok=True)
    spec_path = work_dir / "rebuild-spec.json"
    atomic_write_json(spec_path, {"resolved": resolved, "root": str(root), "out_dir": str(out_dir),
                                  "quiet": quiet, "error_path": str(error_path)})
    env = pinned_environ(pins)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_DIR.parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["HF_DATASETS_CACHE"] = str(work_dir / "hf-datasets-cache")
    if pins.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    log = work_dir / "rebuild-stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(spec_path)], cwd=work_dir, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=None if not quiet else err)
    if proc.returncode != 0:
        raise _child_error(proc.returncode, error_path, log, pins)
    return out_dir


def _child_error(code: int, error_path: Path, log: Path, pins: Pins) -> ReproError:
    if error_path.is_file():
        info = json.loads(error_path.read_text(encoding="utf-8"))
        return from_exit_code(int(info["exit_code"]), f"rebuild: {info['message']}")
    if code == -signal.SIGILL:
        return EnvironmentMismatch(f"the rebuild died with SIGILL: this CPU cannot run cpu_capability "
                                   f"{pins.cpu_capability!r}")
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] if log.is_file() else []
    try:
        why = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    except ValueError:  # a signal number this Python has no name for
        why = f"signal {-code}"
    return TrainingFailed(f"the rebuild process failed ({why})" + (f": {tail[0]}" if tail else ""))
