"""SPDX expressions rated for code, data and weights; Hugging Face licence ids."""

from __future__ import annotations

import pytest

from repro.trust.licenses import check_expression, hf_license, rate


@pytest.mark.parametrize(("expr", "kind", "free"), [
    ("Apache-2.0", "code", True),
    ("CC-BY-4.0", "code", False),          # not OSI-approved: fine for data, not for a program
    ("CC-BY-4.0", "data", True),
    ("CC-BY-4.0", "weights", True),
    ("CC-BY-NC-4.0", "weights", False),
    ("CC-BY-ND-4.0", "data", False),
    ("MIT AND CC-BY-NC-4.0", "weights", False),
    ("MIT OR CC-BY-NC-4.0", "weights", True),  # the user may pick the free branch
    ("(MIT OR LicenseRef-llama) AND BSD-3-Clause", "code", True),
    ("GPL-2.0-or-later WITH Classpath-exception-2.0", "code", True),
    ("LicenseRef-proprietary", "weights", False),
    ("NOASSERTION", "data", False),
    (None, "weights", False),
])
def test_rating(expr: str | None, kind: str, free: bool) -> None:
    assert rate(expr, kind).free is free


def test_reasons_name_the_offending_id() -> None:
    r = rate("MIT AND CC-BY-NC-4.0", "weights")
    assert "CC-BY-NC-4.0" in r.reason and "MIT" not in r.reason
    assert rate(None, "data").reason == "no licence declared"


@pytest.mark.parametrize("bad", ["MIT AND", "(MIT", "MIT OR OR BSD-3-Clause", "MIT)", "MIT; rm -rf /"])
def test_malformed_expressions_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        check_expression(bad)
    assert rate(bad, "code").free is False


@pytest.mark.parametrize(("expr", "hf"), [
    ("Apache-2.0", ("apache-2.0", None)), ("GPL-3.0-only", ("gpl-3.0", None)), ("CC-BY-4.0", ("cc-by-4.0", None)),
    ("ODbL-1.0", ("odbl", None)), ("LicenseRef-Acme-1", ("other", "licenseref-acme-1")), (None, ("unknown", None)),
])
def test_hugging_face_ids(expr: str | None, hf: tuple[str, str | None]) -> None:
    assert hf_license(expr) == hf
