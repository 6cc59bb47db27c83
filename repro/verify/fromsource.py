"""`repro verify --from-source`: rebuild every intermediate from the primary sources, then the weights.

Plain verify treats a tokenizer or a prepared table as input. This does not:

1. copy the primary sources (every file the lock and its stage records name
   that no stage produced) into a work folder; nothing else travels, so a stage
   that reads an undeclared file fails here instead of passing by luck;
2. run each recorded stage, upstream first, from its record alone (target,
   params, pins), and compare what it wrote with the record: the first stage
   that differs is named with its differing outputs, and nothing after it runs;
3. only then verify the training in the work folder, as plain verify does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from repro.builder import gate
from repro.builder.stage import run_stage
from repro.errors import DataError, UserInputError
from repro.lock import lockfile, stagerecord
from repro.lock.lockdiff import Difference, compare_stage_records
from repro.lock.types import Lock, StageRecord
from repro.safeio import copy_beneath, open_beneath
from repro.source.stages import default_record, stage_specs
from repro.verify.report import NOTE_KINDS, VerifyOptions, VerifyReport
from repro.verify.verifier import find_root, verify

SOURCE_DIR = "source"


def verify_from_source(opts: VerifyOptions) -> VerifyReport:
    """Rebuild the chain in a work folder; a report that names the first differing stage, or verify's own."""
    lock = lockfile.read(opts.lock_path)
    records = lock["inputs"].get("stages")
    if not records:
        raise UserInputError(f"{opts.lock_path}: records no stages (inputs.stages): its data were made by no "
                             "declared stage; plain `repro verify` checks it")
    root, root_source = find_root(opts.lock_path, lock, opts.root)
    gate.check(lock, root, opts.trust_code)  # the stages run the lock's code too, before the training does
    keep = opts.work_dir is not None
    work = (opts.work_dir or Path(tempfile.mkdtemp(prefix="repro-from-source-"))).resolve()
    src = work / SOURCE_DIR
    if src.exists():
        shutil.rmtree(src)
    try:
        copied, differing, too_big = copy_primary_sources(lock, root, src)
        report = VerifyReport(str(opts.lock_path), str(src), f"primary sources copied from {root} "
                              f"({root_source})", "from-source", {"primary_sources": len(copied)})
        report.differences += differing
        if too_big:  # not copied: the stages cannot run on it, and it already differs
            report.rebuild = {"performed": False, "reason": "skipped: a primary source differs in size from the "
                                                            "lock, so it was not copied"}
            return report
        paths = record_paths(lock)
        for record in records:
            if not _rerun(record, paths[record["stage"]], src, report, opts):
                report.rebuild = {"performed": False, "reason": f"skipped: stage {record['stage']} differs "
                                                                f"from its record"}
                return report
        final = verify(replace(opts, root=src, work_dir=work / "rebuild" if keep else None))
        final.mode, final.root_source, final.stages = "from-source", report.root_source, report.stages
        final.checked["primary_sources"] = len(copied)
        return final
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def primary_sources(lock: Lock) -> list[str]:
    """Every file the lock or its records name that no recorded stage made."""
    return sorted(recorded_sources(lock), key=lambda s: s.encode("utf-8"))


def recorded_sources(lock: Lock) -> dict[str, tuple[int, str]]:
    """Each primary source with the size and sha256 the lock (or the first record naming it) gives it."""
    records = lock["inputs"]["stages"]
    made = {f["path"] for r in records for f in r["outputs"]["files"]}
    blocks = [lock["inputs"]["data"], lock["inputs"]["code"], *(r[b] for r in records for b in ("inputs", "code"))]
    out: dict[str, tuple[int, str]] = {}
    for block in blocks:
        for f in block["files"]:
            if f["path"] not in made:
                out.setdefault(f["path"], (f["size"], f["hashes"]["sha256"]))
    return out


def copy_primary_sources(lock: Lock, root: Path, dest: Path) -> tuple[list[str], list[Difference], bool]:
    """Copy every primary source into `dest`; (the files, the ones that differ from the lock, whether one was
    too big to copy).

    Each is opened beneath the root (a link may point only inside it) and must be
    a regular file; one whose size differs from the lock's is not copied at all
    (it may be a sparse 1 GB file recorded as 4 KB). One of the recorded size is
    copied and hashed on the way: if it differs, the report says so, and the
    stages then show what it changed downstream.
    """
    recorded = recorded_sources(lock)
    files = primary_sources(lock)
    differing: list[Difference] = []
    too_big = False
    for rel in files:
        size, sha256 = recorded[rel]
        if not os.path.lexists(root / rel):
            raise DataError(f"{rel}: a primary source of this lock, missing under {root}")
        fd, st = open_beneath(root, rel, "primary source", DataError, links="inside")
        os.close(fd)
        if st.st_size != size:
            differing.append(Difference("inputs", "data", rel, "changed", sha256, None,
                                        f"{st.st_size} bytes, the lock records {size}; not copied"))
            too_big = True
            continue
        got = copy_beneath(root, rel, dest / rel, size, "primary source", DataError, links="inside")
        if got != sha256:
            differing.append(Difference("inputs", "data", rel, "changed", sha256, got,
                                        "a primary source differs from the lock"))
    return files, differing, too_big


def record_paths(lock: Lock) -> dict[str, str]:
    """Where each stage's record goes: the lock's own config declares it (else the default place)."""
    declared = {n: s.record for n, s in stage_specs(lock["inputs"]["config"]["resolved"]).items()}
    return {r["stage"]: declared.get(r["stage"]) or default_record(r["stage"], r["declared"]["outputs"][0])
            for r in lock["inputs"]["stages"]}


def _rerun(record: StageRecord, record_path: str, src: Path, report: VerifyReport, opts: VerifyOptions) -> bool:
    """Run one stage from its record in `src`, importing only its hashed code (unless --trust-code), in the
    sandbox (unless --no-sandbox); add its differences to the report; True if identical."""
    spec = stagerecord.spec_of(record, record_path)
    started = time.monotonic()
    rerun = run_stage(spec, record["pins"], src, use_cache=False, quiet=opts.quiet,
                      served=None if opts.trust_code else gate.stage_code(record), sandbox=opts.sandbox)
    diffs = compare_stage_records(record, rerun.record)
    notes = [d for d in diffs if d.kind == "stage tool" or d.kind in NOTE_KINDS]
    diffs = [d for d in diffs if d not in notes]
    order = list(spec.outputs)  # "first" in the order the stage declares its outputs
    outputs = sorted((d for d in diffs if d.kind == "stage output"),
                     key=lambda d: order.index(d.name.split(": ", 1)[1]) if d.name.split(": ", 1)[1] in order
                     else len(order))
    report.notes += notes
    report.stages.append({"stage": spec.name, "seconds": round(time.monotonic() - started, 3),
                          "identical": not diffs,
                          "first_differing_output": outputs[0].name.split(": ", 1)[1] if outputs else None})
    if not diffs:
        return True
    report.differences += diffs
    report.hints.append(_hint(spec.name, diffs, outputs))
    return False


def _hint(stage: str, diffs: list[Difference], outputs: list[Difference]) -> str:
    if not outputs:
        return f"stage {stage}: its outputs match the record, but what it was built from differs (above)"
    first = outputs[0].name.split(": ", 1)[1]
    if len(outputs) == len(diffs):
        return (f"stage {stage} is the first that differs, at {first}: its inputs, code, config and pins are "
                "the recorded ones, so the stage itself is not deterministic (a clock, a random seed it does not "
                "take from repro, a thread count, an unordered iteration)")
    return f"stage {stage} is the first that differs, at {first}, downstream of the changed inputs named above"
