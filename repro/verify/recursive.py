"""`repro verify --recursive`: a fine-tune is verified only when its base is, all the way down.

A fine-tune's lock records its base release (`inputs.base`, see repro.lock.base_model).
After the fine-tune itself verifies, each base in turn is either rebuilt from its
own lock (the same `verify`, with the base project's root found as for any lock)
or, with `--trust-verification KEY`, accepted on a verification record beside
its lock that KEY signed. A base without a lock ends the chain unverified.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from repro.errors import UserInputError
from repro.lock.types import BaseLock
from repro.records import JsonObject
from repro.safeio import printable
from repro.source.filetree import resolve_under
from repro.verify.report import VerifyOptions, VerifyReport
from repro.verify.verifier import verify

MAX_DEPTH = 16  # a chain longer than this is a loop or a hostile lock, not lineage


@dataclass(frozen=True)
class Link:
    """One lock of the chain and how it was established."""

    lockfile: str
    how: str  # rebuilt | inputs-only | signed record | unverified base
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAILED':<7}{self.how:<15}{printable(self.lockfile)}  ({self.detail})"


def verify_chain(opts: VerifyOptions, trusted_keys: list[Path]) -> tuple[VerifyReport, list[Link]]:
    """Verify `opts.lock_path`, then its bases; return the first report and every link in order."""
    first = report = verify(opts)
    links = [_link(opts.lock_path, report)]
    seen = {opts.lock_path.resolve()}
    while report.identical and report.base is not None:
        base = report.base
        locked = base["lock"]
        if locked is None:
            links.append(Link(base["path"], "unverified base", False,
                              "the base release has no repro.lock: its lineage cannot be checked"))
            break
        # A path from the lock: it may not leave the project (an absolute path, `..`, a link out).
        lock_path = resolve_under(Path(report.root), locked["path"], "inputs.base.lock.path")
        if lock_path.resolve() in seen or len(links) > MAX_DEPTH:
            raise UserInputError(f"{printable(str(lock_path))}: the base chain loops or is deeper than {MAX_DEPTH}")
        seen.add(lock_path.resolve())
        accepted = _trusted_record(lock_path, locked, trusted_keys)
        if accepted is not None:
            links.append(accepted)
            if not accepted.ok:
                break
            report = dataclasses.replace(report, base=None)  # a trusted record ends the walk
            continue
        report = verify(dataclasses.replace(opts, lock_path=lock_path, root=None, weights=None, work_dir=None))
        links.append(_link(lock_path, report))
    return first, links


def chain_ok(links: list[Link]) -> bool:
    return all(link.ok for link in links)


def _link(lock_path: Path, report: VerifyReport) -> Link:
    how = "inputs-only" if report.mode == "inputs-only" else "rebuilt"
    detail = "bit-identical" if report.identical else f"{len(report.differences)} difference(s)"
    if report.identical and report.mode == "inputs-only":
        detail = "inputs match the lock"
    return Link(str(lock_path), how, report.identical, detail)


def _trusted_record(lock_path: Path, base: BaseLock, keys: list[Path]) -> Link | None:
    """A verification record beside the base lock, for exactly the lock and weights the fine-tune
    recorded, signed by one of `keys`; None (rebuild instead) when no key was named."""
    if not keys:
        return None
    from repro.trust.attestation import check_record, load_public_keys, record_paths

    trusted = load_public_keys(keys)
    checks = [check_record(p, base["sha256"], base["weights_sha256"], trusted)
              for p in record_paths(lock_path)]
    for check in checks:
        if check.valid and check.signers:
            return Link(str(lock_path), "signed record", True, f"{check.reason}; signed by {', '.join(check.signers)}")
    reasons = [c.reason for c in checks] or ["no verification record beside the base lock"]
    if any(c.valid for c in checks):
        reasons.insert(0, "a record exists but no key named with --trust-verification signed it")
    return Link(str(lock_path), "signed record", False, "; ".join(dict.fromkeys(reasons)))


def chain_json(links: list[Link]) -> list[JsonObject]:
    return [dataclasses.asdict(link) for link in links]
