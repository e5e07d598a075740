"""``assistant bench --fuzz`` runs the fuzzer's suites and the REST part against a real server of
its own and reports what it ran and found (a tiny run here; the tests themselves fuzz more)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_bench_fuzz_reports_cases_findings_and_the_worst_healthz(tmp_path):
    from bench.run import main

    path = tmp_path / "fuzz.json"
    assert main(["--fuzz", "--fuzz-examples", "20", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert set(report) == {"meta", "fuzz"}
    fuzz = report["fuzz"]
    assert fuzz["findings"] == 0 and fuzz["finding_details"] == [], fuzz["finding_details"]
    assert set(fuzz["suites"]) == {"frames", "events", "images", "audio", "resumes", "sequences"}
    assert all(suite["cases"] >= 2 for suite in fuzz["suites"].values())
    assert fuzz["cases"] >= 4 * 20 and fuzz["rest_cases"] > 0 and fuzz["valid_turns"] >= 5
    assert 0 < fuzz["healthz_worst_ms"] < 2000 and fuzz["healthz_failures"] == 0
    assert fuzz["server_alive_at_end"] is True
