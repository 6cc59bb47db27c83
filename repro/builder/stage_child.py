"""The stage process: import, hash what was imported, seed, then call. Started by `repro.builder.stage`.

The code and toolchain digests are taken after the stage's module is imported
and *before* its function is called, and written to disk at once: a file edited
while the stage runs cannot reach the record, and the next run sees the edit.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from repro import lifetime
from repro.builder.error_file import write_error
from repro.canonical import atomic_write_json
from repro.environment import toolchain
from repro.environment.seeding import seed_everything
from repro.errors import Interrupted, ReproError, TrainingFailed, UserInputError
from repro.source.discover import imported_project_files
from repro.source.inputs import code_block, compiler_block
from repro.source.project_import import defining_file, import_target


def main(job_path: str) -> int:
    """Run the job in `job_path`; a user-facing failure goes to its error file as one line.

    A stop signal interrupts the stage at once (its outputs go to a staging folder,
    which the parent removes) and is reported like a failure, with its exit code.
    """
    import json

    lifetime.stop_on_signals()
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    root = Path(job["root"])
    try:
        fn = load_target(job["name"], job["target"], root, job.get("served"))
        # What was imported is what will run: hash it now, before the call (see the module doc).
        atomic_write_json(Path(job["prestart_path"]), {
            "code": code_block(root, job["code"], imported_project_files(root)),
            "toolchain": {**toolchain.record(), "repro": compiler_block(toolchain.compiler_files())}})
        seed_everything(int(job["seed"]))
        fn(inputs=[root / p for p in job["inputs"]], outputs=[Path(p) for p in job["outputs"]], **job["params"])
    except (ReproError, Interrupted) as exc:
        return write_error(Path(job["error_path"]), exc)
    except Exception as exc:  # the stage's own bug: show it, and fail the run like a failed training
        traceback.print_exc()
        return write_error(Path(job["error_path"]), TrainingFailed(f"failed: {type(exc).__name__}: {exc}"))
    return 0


def load_target(name: str, target: str, root: Path, served: dict[str, str] | None = None) -> Any:
    """Import `module.function` through repro's project finder (`repro.source.project_import.import_target`).

    With `served` (a stage run again from its record: its hashed code, with digests)
    only those files are imported, and the function must be defined in one of them:
    its `__module__` and `__qualname__` lead back to it (the trust gate's rule, `defining_file`).
    """
    fn = import_target(target, root, f"stages.{name}._target_", served)
    if served is not None and defining_file(fn, root, served) is None:
        raise UserInputError(f"stage {name}: {target} resolves to {getattr(fn, '__module__', '?')}."
                             f"{getattr(fn, '__qualname__', '?')}, not a function defined in the stage's "
                             "hashed code; pass --trust-code to run it anyway")
    return fn
