"""What an openness audit answers: a verdict per framework, the MOF components, the report. No torch.

`repro.trust.release_audit` makes an `AuditReport`; `repro.trust.lineage` caps a
fine-tune's verdicts by its base's; `repro audit --json` writes `to_json`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from repro.records import JsonObject
from repro.trust.release import ReleaseTerms

VERSION = 1  # of the report's JSON


@dataclass(frozen=True)
class Verdict:
    """One framework's answer, and the reasons a person needs to act on it."""

    framework: str
    verdict: str
    ok: bool
    reasons: list[str]


@dataclass(frozen=True)
class Component:
    """One MOF component: is it in the release, and under an open licence?"""

    name: str
    mof_class: int
    required: bool
    present: bool
    license: str | None
    open: bool
    evidence: str


@dataclass(frozen=True)
class AuditReport:
    lock: str
    lock_sha256: str
    release: ReleaseTerms
    debian: Verdict
    osaid: Verdict
    mof: Verdict
    reproducible: Verdict
    components: list[Component] = field(default_factory=list)
    base: JsonObject | None = None  # a fine-tune's base release and its own audit (repro.trust.lineage)

    def verdicts(self) -> list[Verdict]:
        return [self.debian, self.osaid, self.mof, self.reproducible]

    def to_json(self) -> JsonObject:
        return {
            "version": VERSION, "lock": {"path": self.lock, "sha256": self.lock_sha256},
            "release": self.release.to_json(),
            "frameworks": {k: asdict(v) for k, v in (("debian_ml_policy", self.debian), ("osi_osaid_1_0", self.osaid),
                                                     ("lfai_mof", self.mof), ("reproducible", self.reproducible))},
            "components": [asdict(c) for c in self.components],
            **({"base": self.base} if self.base is not None else {}),
        }
