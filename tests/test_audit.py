"""Openness verdicts from hand-made locks: each framework's rule, one input at a time."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from test_lockfile import sample_lock

from repro.errors import ConfigError
from repro.trust.attestation import RecordCheck
from repro.trust.release import ReleaseTerms
from repro.trust.release_audit import DEBIAN_FREE, DEBIAN_NONFREE, DEBIAN_TOXIC, ReleaseFacts, audit, render_table

FREE = {"weights_license": "Apache-2.0", "code_license": "MIT", "data_license": "CC-BY-4.0",
        "data_location": "repo", "data_url": None, "data_description": "64 rows of toy data",
        "technical_report": None, "research_paper": None}


def lock_with(**release: Any) -> dict[str, Any]:
    lock = copy.deepcopy(sample_lock())
    lock["inputs"]["config"]["resolved"]["release"] = {**FREE, **release}
    lock["inputs"]["config"]["resolved"]["data"] = {"test_fraction": 0.2}
    return lock


def rated(lock: dict[str, Any], **facts: Any) -> Any:
    return audit(lock, "repro.lock", "ab" * 32, ReleaseFacts(**facts))


@pytest.mark.parametrize(("release", "verdict"), [
    ({}, DEBIAN_FREE),
    ({"data_location": "dvc", "data_url": "s3://bucket/digits"}, DEBIAN_FREE),
    ({"data_location": "url", "data_url": "https://example.org/digits.csv"}, DEBIAN_FREE),
    ({"data_location": "private"}, DEBIAN_TOXIC),
    ({"data_location": "unknown"}, DEBIAN_TOXIC),
    ({"data_license": "CC-BY-NC-4.0"}, DEBIAN_TOXIC),
    ({"data_license": None}, DEBIAN_TOXIC),
    ({"code_license": "LicenseRef-proprietary"}, DEBIAN_TOXIC),  # no free training program: not a Free Model
    ({"weights_license": "CC-BY-NC-4.0"}, DEBIAN_NONFREE),
    ({"weights_license": None, "data_location": "private"}, DEBIAN_NONFREE),  # the licence is checked first
])
def test_debian_ml_policy(release: dict[str, Any], verdict: str) -> None:
    report = rated(lock_with(**release))
    assert report.debian.verdict == verdict
    assert report.debian.ok is (verdict == DEBIAN_FREE)


def test_toxic_candy_says_why() -> None:
    reasons = rated(lock_with(data_location="private")).debian.reasons
    assert reasons == ["training data private: exists but is not shared; anyone must be able to download it"]


def test_a_lock_without_release_terms_is_non_free() -> None:
    lock = sample_lock()
    report = rated(lock)
    assert report.debian.verdict == DEBIAN_NONFREE and "no licence declared" in report.debian.reasons[0]
    assert not report.osaid.ok and report.mof.verdict == "unclassified"


@pytest.mark.parametrize(("release", "missing"), [
    ({}, None),
    ({"data_location": "private"}, None),  # OSAID asks for data *information*, not the data itself
    ({"data_description": None}, "data information"),
    ({"data_location": "unknown"}, "data information"),
    ({"code_license": "CC-BY-4.0"}, "code"),  # code needs an OSI-approved licence
    ({"weights_license": "CC-BY-NC-4.0"}, "parameters"),
])
def test_osaid(release: dict[str, Any], missing: str | None) -> None:
    report = rated(lock_with(**release))
    assert report.osaid.ok is (missing is None)
    if missing:
        assert report.osaid.reasons[0].startswith(missing)


def test_mof_classes_climb_with_components() -> None:
    lock = lock_with()
    assert rated(lock).mof.verdict == "unclassified"  # no card, no technical report
    no_report = rated(lock, card=True).mof
    assert no_report.verdict == "unclassified" and "Technical report (missing)" in no_report.reasons[0]
    with_report = lock_with(technical_report="docs/report.md")
    assert rated(with_report, card=True).mof.verdict == "Class II (Open Tooling)"
    full = lock_with(technical_report="docs/report.md", research_paper="https://arxiv.org/abs/0000.00000")
    assert rated(full, card=True).mof.verdict == "Class II (Open Tooling)"  # no intermediate checkpoints
    assert rated(full, card=True, checkpoints=True).mof.verdict == "Class I (Open Science)"
    private = lock_with(technical_report="r", research_paper="p", data_location="private")
    verdict = rated(private, card=True, checkpoints=True).mof
    assert verdict.verdict == "Class III (Open Model)" and "Evaluation data (missing)" in verdict.reasons[0]
    nc = lock_with(technical_report="r", weights_license="CC-BY-NC-4.0")
    assert "not open: CC-BY-NC-4.0" in rated(nc, card=True).mof.reasons[0]


def test_reproducible_only_with_a_valid_record(tmp_path: Any) -> None:
    lock = lock_with()
    assert rated(lock).reproducible.verdict == "no"
    bad = RecordCheck(False, "verification.json verifies another lock", tmp_path)
    assert rated(lock, records=(bad,)).reproducible.reasons == ["verification.json verifies another lock"]
    unsigned = RecordCheck(True, "rebuilt bit-identically", tmp_path)
    assert rated(lock, records=(unsigned,)).reproducible.verdict == "self-reported"
    signed = RecordCheck(True, "rebuilt bit-identically", tmp_path, signers=("alice",))
    assert rated(lock, records=(signed,), trusted_keys=1).reproducible.verdict == "yes"
    assert rated(lock, records=(signed,), trusted_keys=1, threshold=2).reproducible.verdict == "no"


def test_table_and_json_agree() -> None:
    report = rated(lock_with(data_location="private"), card=True)
    table = render_table(report)
    assert table.splitlines()[2].split()[:3] == ["Debian", "ML-Policy", "ToxicCandy"]
    data = report.to_json()
    assert data["frameworks"]["debian_ml_policy"]["verdict"] == DEBIAN_TOXIC
    assert [c["name"] for c in data["components"]][:2] == ["Model architecture", "Model parameters (Final)"]
    assert len(table.splitlines()) == 8 + len(report.components)  # title, blank, 4 verdicts, blank, header


@pytest.mark.parametrize(("release", "needle"), [
    ({"data_location": "cloud"}, "release.data_location"),
    ({"data_location": "url", "data_url": None}, "release.data_url"),
    ({"weights_license": "MIT AND"}, "release.weights_license"),
    ({"licence": "MIT"}, "release.licence: unknown key"),
    ({"data_description": ""}, "release.data_description"),
])
def test_bad_release_terms_name_the_key(release: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        ReleaseTerms.from_config({"release": {**FREE, **release}})


def test_trust_modules_do_not_import_torch() -> None:
    """Signature checks, provenance and the audit must run where torch is not installed."""
    import subprocess
    import sys

    code = ("import sys, repro.trust.signing, repro.trust.attestation, repro.trust.provenance, "
            "repro.trust.release_audit, repro.trust.model_card, repro.cli; repro.cli.build_parser(); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
