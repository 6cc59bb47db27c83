"""verify's rebuild: the lock built again in a fresh process under its pins, and compared with the lock.

The rebuilt lock is compared with the recorded one by `repro.lock.lockdiff.compare_locks`
(what `repro diff` uses); differing tensors get their element counts, a differing
trajectory its first step, and `--localize` the first differing op.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from repro.builder.launch import launch
from repro.builder.rebuild import rebuild_options, spec_from_lock
from repro.builder.sandbox import sandbox_for
from repro.check.localize import name_first_step
from repro.errors import UserInputError
from repro.filenames import LOCK_NAME
from repro.lock import lockfile
from repro.lock.lockdiff import Difference, compare_locks
from repro.lock.types import Lock
from repro.records import JsonObject
from repro.verify.report import NOTE_KINDS, Rebuild, VerifyOptions, VerifyReport


def rebuild_and_compare(lock: Lock, root: Path, opts: VerifyOptions, weights_path: Path | None,
                        report: VerifyReport, plan: list[tuple[str, str, str]]) -> Rebuild:
    """Rebuild `lock` in a work folder under its pins, file the rebuilt lock's differences in `report`,
    and return the report's `rebuild` block. The work folder is kept only when `opts.work_dir` names it.
    `plan`: the trust gate's targets, which the rebuild child judges first as imported objects
    (gate.check_located)."""
    keep = opts.work_dir is not None
    work = Path(opts.work_dir) if opts.work_dir else Path(tempfile.mkdtemp(prefix="repro-verify-"))
    work = work.resolve()
    if work / "out" == opts.lock_path.resolve().parent:
        raise UserInputError(f"--work-dir {opts.work_dir}: would overwrite the lock being verified")
    work.mkdir(parents=True, exist_ok=True)
    try:
        python: Path | None = None
        env: JsonObject = {"mode": "current"}
        if opts.toolchain == "recreate":
            from repro.verify.recreate import provision

            made = provision(lock["toolchain"], list(opts.find_links), opts.quiet)
            python, env = made.python, made.to_json()
        started = time.monotonic()
        box = sandbox_for(root, work, opts.world_size or lock["build"]["world_size"], opts.sandbox,
                          None if python is None else str(python))
        # The lock as a build, made once: the rebuild and any replay of it (--localize) run this spec.
        spec = spec_from_lock(lock, root, work / "out", quiet=opts.quiet, world_size=opts.world_size,
                              gate=tuple(plan), trust_code=opts.trust_code)
        options = rebuild_options(python, box)
        launch(spec, options, work)
        out = spec.out_dir
        seconds = time.monotonic() - started
        rebuilt = lockfile.read(out / LOCK_NAME)
        add_rebuilt_differences(report, lock, rebuilt)
        report.differences = count_elements(report.differences, lock, weights_path, out / LOCK_NAME,
                                            follow_links=opts.weights is not None)
        report.differences = name_first_step(report.differences, lock, opts.lock_path.parent, rebuilt, out)
        localized = None
        if opts.localize:
            def replay_here(folder: Path, env: dict[str, str]) -> None:  # this rebuild again, as it ran
                folder.mkdir(parents=True, exist_ok=True)
                launch(dataclasses.replace(spec, out_dir=folder / "out", quiet=True),
                       dataclasses.replace(options, env_extra=tuple(sorted(env.items()))), folder)

            localized = _localize(lock, root, opts, work, report.differences, replay_here)
        return {"performed": True, "seconds": round(seconds, 3), "work_dir": str(work) if keep else None,
                "weights_sha256": rebuilt["outputs"]["weights"]["hashes"]["sha256"], "toolchain": env,
                "sandbox": {"active": box.active, "description": box.description}, "localized": localized}
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def add_rebuilt_differences(report: VerifyReport, lock: Lock, rebuilt: Lock) -> None:
    """File what the rebuilt lock says differs: outputs, pins and the toolchain it really ran with.

    Of the inputs, only the sample order and a project file the rebuild imported
    that the lock does not list are new here.
    """
    # The rebuild's own record of its toolchain replaces the guess made before it.
    report.notes = [d for d in report.notes if d.section != "toolchain"]
    seen = {(d.kind, d.name) for d in report.differences + report.notes}
    for d in compare_locks(lock, rebuilt):
        if d.section == "inputs" and d.kind == "code" and d.change == "added":
            report.differences.append(dataclasses.replace(
                d, detail="the rebuild imported this project file; the lock does not list it"))
            continue
        if (d.section == "inputs" and d.kind != "sample_order") or (d.kind, d.name) in seen:
            continue  # inputs were compared before the rebuild, by the same functions
        if d.section == "build" and d.name == "resumes":
            continue  # the lock's resume record: a note already (checks.resume_notes); a rebuild never resumes
        (report.notes if d.kind in NOTE_KINDS or d.section == "toolchain" else report.differences).append(d)


def _localize(lock: Lock, root: Path, opts: VerifyOptions, work: Path, diffs: list[Difference],
              replay_here: Callable[[Path, dict[str, str]], None]) -> JsonObject | None:
    """--localize: the first differing op, when an environment here reproduces the lock's steps."""
    from repro.check.localize import localize_lock
    from repro.lock.lockfile import read_step_digests

    step = next((d.stats["first_step"] for d in diffs if d.kind == "step" and d.stats), None)
    recorded = read_step_digests(opts.lock_path.parent, lock)
    if not step or recorded is None:
        return None if not diffs else {"error": "no exact first step to replay (the lock has no step digests "
                                                "beside it, or every step agrees)"}
    if (opts.world_size or lock["build"]["world_size"]) != 1:
        return {"error": "the op recorder replays one process; this rebuild ran several ranks"}
    return localize_lock(lock, root, int(step), recorded, work / "localize", replay_here)


def count_elements(diffs: list[Difference], lock: Lock, original: Path | None,
                   rebuilt_lock: Path, follow_links: bool = True) -> list[Difference]:
    """Add "N of M elements differ, max abs diff X" to each differing tensor.

    Needs the original values: a weights file whose tensor matches the lock's digest.
    """
    from repro.lock.tensordiff import element_diff, read_tensors

    changed = [d for d in diffs if d.kind == "tensor" and d.change == "changed" and d.section == "outputs"]
    if not changed:
        return diffs
    records = {t["name"]: t for t in lock["outputs"]["weights"]["tensors"]}
    with contextlib.ExitStack() as files:  # both files open once; tensors compared a chunk at a time
        # a link beside a stranger's lock is refused, as check_weights refused it (only --weights may be one)
        theirs = files.enter_context(read_tensors(original, follow_links)).tensors if original is not None else {}
        ours = files.enter_context(read_tensors(rebuilt_lock.parent / lock["outputs"]["weights"]["path"])).tensors
        out = []
        for d in diffs:
            if d in changed and d.name in theirs and d.name in ours and theirs[d.name].record() == records.get(d.name):
                e = element_diff(theirs[d.name], ours[d.name])
                mad = "n/a" if e["max_abs_diff"] is None else f"{e['max_abs_diff']:.3g}"
                d = dataclasses.replace(d, stats=e, detail=f"{e['differing']} of {e['elements']} elements differ, "
                                                           f"max abs diff {mad}")
            elif d in changed:
                d = dataclasses.replace(d, detail="no weights file with the lock's values to count differing "
                                                  "elements (pass --weights FILE)")
            out.append(d)
    return out
