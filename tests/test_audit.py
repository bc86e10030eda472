"""`make audit`'s verdict on pip-audit's report: a fixable vulnerability fails, an unfixable one
is reported, and a run that could audit nothing never passes as audited."""

from __future__ import annotations

from scripts.audit import UNREACHABLE, verdict


def test_a_vulnerability_with_a_fix_fails() -> None:
    report = {
        "dependencies": [
            {"name": "ok", "version": "1.0", "vulns": []},
            {
                "name": "bad",
                "version": "1.0",
                "vulns": [{"id": "PYSEC-1", "fix_versions": ["1.1"]}],
            },
        ]
    }

    code, lines = verdict(report)

    assert code == 1
    assert "bad 1.0: PYSEC-1 (fixed in 1.1)" in lines


def test_a_vulnerability_without_a_fix_is_reported_but_passes() -> None:
    report = {"dependencies": [{"name": "x", "version": "2", "vulns": [{"id": "GHSA-1"}]}]}

    code, lines = verdict(report)

    assert code == 0
    assert "x 2: GHSA-1 (no fix released)" in lines


def test_nothing_audited_is_not_a_pass() -> None:
    report = {"dependencies": [{"name": "x", "skip_reason": "Dependency not found on PyPI"}]}

    code, lines = verdict(report)

    assert code == UNREACHABLE
    assert lines[-1].startswith("NOT AUDITED")
