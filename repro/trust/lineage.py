"""Openness follows the chain: a fine-tune is no more free, nor more reproducible, than its base.

`repro audit` on a lock with `inputs.base` audits the base release's own lock too
(found under the same project, as verify finds it) and caps two verdicts by the
base's: Debian ML-Policy (a fine-tune of a base trained on non-free data is not a
Free Model) and our Reproducible mark (a fine-tune of an unverified or
self-reported base is at best what its base is). No torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from repro.errors import ReproError
from repro.source.enclosing import enclosing_folders
from repro.source.filetree import resolve_under
from repro.trust.verdicts import AuditReport, Verdict

if TYPE_CHECKING:
    from repro.lock.types import Lock

DEBIAN_RANK = {"Free Model": 2, "ToxicCandy": 1, "Non-free": 0}
REPRODUCIBLE_RANK = {"yes": 2, "self-reported": 1, "no": 0}


def base_lock_path(lock_path: Path, rel: str) -> Path | None:
    """The base release's lock, `rel` under the project root: the lock's own folder or one
    above it, never above the git repository that holds it (nor above the folder, outside git)."""
    folders, _ = enclosing_folders(lock_path.resolve().parent)
    for top in folders:
        try:
            path = resolve_under(top, rel, "inputs.base.lock.path")
        except ReproError:  # a path that escapes this candidate root is simply not here
            continue
        if os.path.isfile(path):
            return path
    return None


def follow_base(report: AuditReport, lock: Lock, lock_path: Path,
                audit_base: Callable[[Path], AuditReport]) -> AuditReport:
    """`report` with the base's verdicts applied and the base's report attached."""
    base = lock["inputs"].get("base")
    if base is None:
        return report
    where = f"base model {base['path']}"
    if base["lock"] is None:
        why = f"{where} has no repro.lock (unverified base): its data and lineage cannot be checked"
        return dataclasses.replace(
            report, debian=_cap(report.debian, "ToxicCandy", why, DEBIAN_RANK),
            reproducible=_cap(report.reproducible, "no", why, REPRODUCIBLE_RANK),
            base={"path": base["path"], "status": base["status"]})
    found = base_lock_path(lock_path, base["lock"]["path"])
    if found is None:
        why = f"{where}: its lock {base['lock']['path']} is not under this project; audit the base release"
        return dataclasses.replace(
            report, debian=_cap(report.debian, "ToxicCandy", why, DEBIAN_RANK),
            reproducible=_cap(report.reproducible, "no", why, REPRODUCIBLE_RANK),
            base={"path": base["path"], "status": "base lock not found"})
    parent = audit_base(found)
    if parent.lock_sha256 != base["lock"]["sha256"]:
        why = (f"{where}: its lock {base['lock']['path']} is not the one this model was trained on (sha256 "
               f"{parent.lock_sha256[:12]}…, recorded {base['lock']['sha256'][:12]}…)")
        return dataclasses.replace(
            report, debian=_cap(report.debian, "ToxicCandy", why, DEBIAN_RANK),
            reproducible=_cap(report.reproducible, "no", why, REPRODUCIBLE_RANK),
            base={"path": base["path"], "status": "base lock changed", "audit": parent.to_json()})
    return dataclasses.replace(
        report,
        debian=_cap(report.debian, parent.debian.verdict, f"{where}: {parent.debian.reasons[0]}", DEBIAN_RANK),
        reproducible=_cap(report.reproducible, parent.reproducible.verdict,
                          f"{where}: {parent.reproducible.reasons[0]}", REPRODUCIBLE_RANK),
        base={"path": base["path"], "status": base["status"], "audit": parent.to_json()})


def _cap(own: Verdict, base_verdict: str, why: str, rank: dict[str, int]) -> Verdict:
    """The lower of the two verdicts; when the base's is lower, it says so first."""
    if rank.get(base_verdict, 0) >= rank.get(own.verdict, 0):
        return own
    return dataclasses.replace(own, verdict=base_verdict, ok=False, reasons=[why, *own.reasons])
