"""The openness audit: what a release is, under three frameworks plus our own mark. No torch.

The criteria, in our words and with links to the sources, are in docs/openness.md.
`audit` is pure: it rates a lock plus a few facts about the release folder, so
every verdict can be tested on a hand-made lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.filenames import CARD_NAME, CHECKPOINTS_DIR
from repro.lock import lockfile
from repro.lock.types import Lock
from repro.records import dig
from repro.safeio import printable
from repro.trust.attestation import RecordCheck, check_record, load_public_keys, record_paths, weights_beside_match
from repro.trust.licenses import Rating, rate
from repro.trust.lineage import follow_base
from repro.trust.release import DATA_LOCATIONS, ReleaseTerms
from repro.trust.verdicts import AuditReport, Component, Verdict

REPRO_LICENSE = "Apache-2.0"  # repro's own source: part of every training program it runs
# Licences of the core packages a lock's toolchain records, from their PyPI metadata; other
# distributions the build imported are listed in toolchain.distributions, not rated here.
PACKAGE_LICENSES = {"python": "Python-2.0", "torch": "BSD-3-Clause", "accelerate": "Apache-2.0",
                    "numpy": "BSD-3-Clause", "datasets": "Apache-2.0", "safetensors": "Apache-2.0",
                    "hydra-core": "MIT"}

DEBIAN_FREE, DEBIAN_TOXIC, DEBIAN_NONFREE = "Free Model", "ToxicCandy", "Non-free"
MAX_BASE_DEPTH = 16  # fine-tunes of fine-tunes: deeper is a loop or a hostile lock
MOF_NAMES = {3: "Class III (Open Model)", 2: "Class II (Open Tooling)", 1: "Class I (Open Science)"}


@dataclass(frozen=True)
class ReleaseFacts:
    """What the audit reads from the folder beside the lock, not from the lock."""

    card: bool = False
    checkpoints: bool = False
    records: tuple[RecordCheck, ...] = ()
    trusted_keys: int = 0  # how many keys the user named with --trusted-key
    threshold: int = 1  # distinct trusted signers needed


def audit(lock: Lock, lock_name: str, lock_sha256: str, facts: ReleaseFacts) -> AuditReport:
    """Rate a (validated) lock under every framework."""
    release = ReleaseTerms.from_config(lock["inputs"]["config"]["resolved"])
    weights, data, code = (rate(release.weights_license, "weights"), rate(release.data_license, "data"),
                           rate(release.code_license, "code"))
    comps = components(lock, release, facts, weights, data, code)
    return AuditReport(lock_name, lock_sha256, release, debian(release, weights, data, code),
                       osaid(release, weights, code), mof(comps), reproducible(facts), comps)


def debian(release: ReleaseTerms, weights: Rating, data: Rating, code: Rating) -> Verdict:
    """Debian ML-Policy: the weights' licence first, then data and training program."""
    name = "Debian ML-Policy"
    if not weights.free:
        return Verdict(name, DEBIAN_NONFREE, False, [licence_reason("weights", weights)])
    reasons = []
    if not data.free:
        reasons.append(licence_reason("data", data))
    if not release.data_obtainable:
        reasons.append(f"training data {release.data_location}: {DATA_LOCATIONS[release.data_location]}; "
                       "anyone must be able to download it")
    if not code.free:
        reasons.append(licence_reason("training program", code))
    if reasons:
        return Verdict(name, DEBIAN_TOXIC, False, reasons)
    where = DATA_LOCATIONS[release.data_location]
    return Verdict(name, DEBIAN_FREE, True, [f"weights {weights.expression}, data {data.expression} ({where}), "
                                             f"training program {code.expression} + repro {REPRO_LICENSE}"])


def licence_reason(what: str, rating: Rating, key: str | None = None) -> str:
    """`weights licence GPL-3.0-only: ...`, or, when none was declared, which key to set."""
    if rating.expression is None:
        key = key or {"weights": "weights_license", "data": "data_license"}.get(what, "code_license")
        return f"{what}: no licence declared (set release.{key})"
    return f"{what} licence {rating.expression}: {rating.reason}"


def licence_text(expression: str | None) -> str:
    """A licence as people read it: the SPDX expression, or `not declared`."""
    return "not declared" if expression is None else expression


def osaid(release: ReleaseTerms, weights: Rating, code: Rating) -> Verdict:
    """OSI Open Source AI Definition 1.0: data information, code, parameters."""
    missing = []
    if not release.data_description:
        missing.append("data information: release.data_description is empty")
    if release.data_location == "unknown":
        missing.append("data information: where to obtain the data is not stated (release.data_location)")
    if not code.free:
        missing.append(licence_reason("code", code))
    if not weights.free:
        missing.append(licence_reason("parameters", weights, "weights_license"))
    if missing:
        return Verdict("OSI OSAID 1.0", "not Open Source AI", False, missing)
    return Verdict("OSI OSAID 1.0", "Open Source AI", True,
                   ["data information, code and parameters are available under free terms"])


def components(lock: Lock, release: ReleaseTerms, facts: ReleaseFacts,
               weights: Rating, data: Rating, code: Rating) -> list[Component]:
    """The MOF's components, with the evidence repro has for each one in this release."""
    metrics = bool(lock["outputs"]["metrics"])
    group = lock["inputs"]["config"]["resolved"].get("data")  # a stranger's lock: any JSON at all
    fraction = group.get("test_fraction") if isinstance(group, dict) else None
    held_out = isinstance(fraction, int | float) and not isinstance(fraction, bool) and fraction > 0
    obtainable = release.data_obtainable
    doc = weights  # release documents (card, report, results) are published under the weights' licence

    def c(name: str, cls: int, present: bool, lic: Rating, evidence: str, required: bool = True) -> Component:
        return Component(name, cls, required, present, lic.expression, present and lic.free, evidence)

    ev = evidence(lock)
    return [
        c("Model architecture", 3, True, code, ev["architecture"]),
        c("Model parameters (Final)", 3, True, weights, "model.safetensors, sha256 in the lock"),
        c("Evaluation results", 3, metrics, doc, "outputs.metrics in the lock" if metrics else "no held-out metrics"),
        c("Model card", 3, facts.card, doc, CARD_NAME if facts.card else f"no {CARD_NAME} (run `repro card`)"),
        c("Data card", 3, facts.card and bool(release.data_description), doc,
          "the card's data section" if release.data_description else "release.data_description is empty"),
        c("Technical report", 3, bool(release.technical_report), doc,
          release.technical_report or "release.technical_report is not set"),
        c("Sample model outputs", 3, False, doc, "repro does not publish samples", required=False),
        c("Training code", 2, True, code, ev["training"]),
        c("Inference code", 2, True, code, ev["inference"]),
        c("Evaluation code", 2, metrics, code, ev["evaluation"]),
        c("Evaluation data", 2, held_out and obtainable, data,
          "held-out split of the training data" if held_out else "data.test_fraction is 0"),
        c("Supporting libraries and tools", 2, True, _packages(lock), "versions in toolchain.distributions",
          required=False),
        c("Datasets", 1, obtainable, data, f"data_location {release.data_location}"),
        c("Data preprocessing code", 1, True, code, ev["preprocessing"]),
        c("Model parameters (Intermediate)", 1, facts.checkpoints, weights,
          "checkpoints/ beside the lock" if facts.checkpoints else "no checkpoints/ beside the lock"),
        c("Research paper", 1, bool(release.research_paper), doc,
          release.research_paper or "release.research_paper is not set"),
        c("Model metadata", 1, True, weights, "repro.lock (config, pins, digests)", required=False),
    ]


def evidence(lock: Lock) -> dict[str, str]:
    """Where each code component is, in the user's own terms: their files and `_target_`s, never repro's
    internal modules (a `_target_` of repro's is named by its public import path)."""
    resolved = lock["inputs"]["config"]["resolved"]
    model, task = _target(resolved.get("model")), _target(resolved.get("task"))
    model_files = owned_files(lock, model)
    where = f" ({_listed(model_files)})" if model_files else ""
    project = [f["path"] for f in lock["inputs"]["code"]["files"]]
    stages = lock["inputs"].get("stages", [])
    pre = _target(dig(resolved, "data", "preprocess"))
    prep = [f"stage {r['stage']} ({_listed([f['path'] for f in r['code']['files']])})" for r in stages]
    prep += [f"data.preprocess {pre} ({_listed(owned_files(lock, pre))})" if owned_files(lock, pre) else
             f"data.preprocess {pre}"] if pre else []
    return {
        "architecture": f"{model}{where} and its config, hashed in the lock",
        "inference": f"the forward pass of {model}{where}, run by the held-out evaluation",
        "evaluation": f"the task's evaluate() ({task}) on the held-out split",
        "training": f"repro {lock['toolchain']['repro']['version']}'s training loop "
                    f"({len(lock['toolchain']['repro']['files'])} modules) + {len(project)} project file"
                    f"{'' if len(project) == 1 else 's'}" + (f" ({_listed(project)})" if project else "")
                    + ", digests in the lock",
        "preprocessing": "; ".join(prep) + ", hashed in the lock" if prep else
                         "none: the data files are loaded as stored (the data config names the loader)",
    }


def owned_files(lock: Lock, target: str) -> list[str]:
    """The project code files of `target`'s top-level package or module, as the lock records them."""
    top = target.split(".", 1)[0]
    if not top:
        return []
    return [f["path"] for f in lock["inputs"]["code"]["files"] if f["path"].startswith(f"{top}/") or
            f["path"] == f"{top}.py"]


def _target(node: Any) -> str:
    target = node.get("_target_") if isinstance(node, dict) else None
    return str(target) if target else ""


def _listed(paths: list[str], limit: int = 3) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _packages(lock: Lock) -> Rating:
    names = ["python", *sorted(n for n in lock["toolchain"]["distributions"] if n in PACKAGE_LICENSES)]
    unknown = [n for n in names if n not in PACKAGE_LICENSES]
    if unknown:
        return Rating(None, False, f"licence of {', '.join(unknown)} not known to repro")
    return rate(" AND ".join(sorted({PACKAGE_LICENSES[n] for n in names})), "code")


def mof(comps: list[Component]) -> Verdict:
    """The highest MOF class whose required components (and those of lower classes) are all open."""
    reached = 0
    reasons = []
    for cls in (3, 2, 1):
        short = [x for x in comps if x.mof_class >= cls and x.required and not x.open]
        if short:
            names = ", ".join(f"{x.name} ({'not open: ' + licence_text(x.license) if x.present else 'missing'})"
                              for x in short)
            reasons.append(f"{MOF_NAMES[cls]} not met: {names}")
            break
        reached = cls
    verdict = MOF_NAMES[reached] if reached else "unclassified"
    return Verdict("LF AI MOF", verdict, reached > 0, reasons or ["every component is present and open"])


def reproducible(facts: ReleaseFacts) -> Verdict:
    """Our mark: granted only when `threshold` distinct keys the user trusts signed a PASSED
    verification summary of this exact lock and weights. Unsigned or untrusted ones are "self-reported"."""
    name = "Reproducible"
    valid = [r for r in facts.records if r.valid]
    if not valid:
        return Verdict(name, "no", False, [r.reason for r in facts.records[:3]] or ["no verification record"])
    signers = sorted({s for r in valid for s in r.signers})
    who = [f"{r.reason}; {_where(r)}" for r in valid]
    if facts.trusted_keys and len(signers) >= facts.threshold:
        head = f"rebuilt bit-identically by {len(signers)} trusted signer{'s' if len(signers) != 1 else ''} " \
               f"(threshold {facts.threshold}): {', '.join(signers)}"
        return Verdict(name, "yes", True, [head, *who])
    if facts.trusted_keys:
        head = f"{len(signers)} of the {facts.threshold} trusted signers required (--threshold) vouch for a rebuild"
        return Verdict(name, "no", False, [head, *who])
    return Verdict(name, "self-reported", False,
                   ["a rebuild is recorded, but no key you trust signed it (pass --trusted-key KEY)", *who])


def _where(r: RecordCheck) -> str:
    m = r.machine
    return (f"on {m.get('cpu_model', 'an unknown CPU')}, torch {m.get('torch', '?')}, "
            f"python {m.get('python', '?')}, at {r.time_verified or 'an unknown time'}")


def audit_path(lock_path: Path, records: list[Path] | None = None, trusted_keys: list[Path] | None = None,
               threshold: int = 1, assume_card: bool = False, depth: int = 0) -> AuditReport:
    """Read the lock and the facts in the folder beside it, then `audit` (and its base's, for a fine-tune)."""
    from repro.errors import UserInputError

    lock_path = Path(lock_path)
    if threshold < 1:
        raise UserInputError(f"--threshold {threshold}: expected at least 1")
    lock, sha = lockfile.load(lock_path)  # one read: the digest is of the bytes rated
    folder = lock_path.parent
    ckpt = folder / CHECKPOINTS_DIR
    keys = load_public_keys(list(trusted_keys or []))
    weights = lock["outputs"]["weights"]
    checks = [check_record(p, sha, weights["hashes"]["sha256"], keys)
              for p in (records if records is not None else record_paths(lock_path))]
    stale = weights_beside_match(lock_path, weights["path"], weights["hashes"]["sha256"])
    if stale:
        checks = [RecordCheck(False, stale, c.path) for c in checks]
    facts = ReleaseFacts(
        card=assume_card or (folder / CARD_NAME).is_file(),
        checkpoints=ckpt.is_dir() and not ckpt.is_symlink() and any(ckpt.glob("step-*/*.safetensors")),
        records=tuple(checks), trusted_keys=len(keys), threshold=threshold,
    )
    report = audit(lock, str(lock_path), sha, facts)
    if depth >= MAX_BASE_DEPTH:
        raise UserInputError(f"{printable(str(lock_path))}: the chain of base models is deeper than {MAX_BASE_DEPTH}")
    return follow_base(report, lock, lock_path,
                       lambda base: audit_path(base, None, trusted_keys, threshold, depth=depth + 1))


def render_table(report: AuditReport) -> str:
    """The 10-second view: one line per framework, then the MOF components. Every value is escaped."""
    p = printable
    lines = [f"repro audit  {p(report.lock)}  (sha256 {report.lock_sha256[:12]}...)", ""]
    for v in report.verdicts():
        lines.append(f"{v.framework:<18} {p(v.verdict):<24} {p(v.reasons[0])}")
        lines += [f"{'':<18} {'':<24} {p(r)}" for r in v.reasons[1:]]
    if report.base is not None:
        lines.append(f"{'base model':<18} {p(str(report.base['path']))}  ({p(str(report.base['status']))}; "
                     "its verdicts cap this one's Debian and Reproducible)")
    lines += ["", f"{'MOF component':<32} {'class':<6} {'status':<9} {'licence':<16} evidence"]
    for x in report.components:
        status = ("open" if x.open else "not open") if x.present else ("missing" if x.required else "optional")
        lines.append(f"{x.name:<32} {'I' * x.mof_class:<6} {status:<9} {p(licence_text(x.license)):<16} "
                     f"{p(x.evidence)}")
    return "\n".join(lines) + "\n"
