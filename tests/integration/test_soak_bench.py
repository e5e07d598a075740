"""The soak driver (``bench.soak``) on a tiny run: a real ``assistant serve`` with two workers and
its own redis-server, three scripted sessions for a few seconds with images and resumes often.
The report must hold every field, sampled for every server process, and no error. No timing
thresholds: how much memory grows in a run this short is not judged here."""

import pytest

from bench.run import format_table
from bench.soak import SoakConfig, run_soak
from bench.soak_procs import growth

pytestmark = pytest.mark.integration


def test_a_tiny_soak_reports_memory_descriptors_and_turns_without_errors():
    config = SoakConfig(
        minutes=0.2, sessions=3, think_s=0.2, image_every=2, resume_every=3,
        conversation_turns=6, workers=2, real_sessions=0, sample_s=3,
    )  # fmt: skip
    report = run_soak(config)

    assert report["errors"] == {} and report["error_count"] == 0, report["error_messages"]
    assert report["process_changes"] == []
    assert "real_model" not in report
    # Only growth may be found in a run this short (the workers are still warming up).
    assert all("RSS grew" in finding for finding in report.get("findings", [])), report
    assert report["model"] == "scripted" and report["sessions"] == 3 and report["workers"] == 2

    kinds = report["turns_by_kind"]
    assert report["turns"] == sum(kinds.values()) == sum(report["turns_by_minute"])
    assert kinds["text"] >= 1 and kinds["image"] >= 1, kinds
    assert report["resumes"] >= 1 and report["conversations"] >= 3
    assert 0 < report["turn_p50_ms"] <= report["turn_p99_ms"]

    samples = len(report["sample_times_s"])
    assert samples >= 3  # the start, at least one every-3-s sample, the end
    names = set(report["rss_mb"])
    assert {"serve", "redis", "worker-1", "worker-2"} <= names
    assert names == set(report["fds"]) == set(report["growth_after_warmup"])
    for name in names:
        assert len(report["rss_mb"][name]) == len(report["fds"][name]) == samples
        assert all(mb > 0 for mb in report["rss_mb"][name]), name
        assert all(fds > 0 for fds in report["fds"][name]), name
        assert isinstance(report["growth_after_warmup"][name], float)
    assert "redis-server" in report["processes"]["redis"]["cmdline"]
    redis = report["redis_used_memory_mb"]
    assert len(redis) == samples and redis[-1] > redis[0] > 0  # the conversations are stored
    assert report["redis_keys"][-1] > report["redis_keys"][0]
    left = report["after_clients_left"]
    assert set(left["rss_mb"]) == names and set(left["fds"]) == names

    table = format_table({"meta": {"wall_s": 1.0}, "soak": report})
    assert "3 sessions x 0.2 min: turns" in table
    assert "worker-2 RSS MB start/end" in table and "redis used_memory MB" in table


def test_growth_is_measured_from_the_sample_after_warm_up():
    assert growth([100.0, 200.0, 210.0]) == 0.05
    assert growth([100.0, 110.0]) == 0.1  # no sample after warm-up: from the start
    assert growth([100.0, None, 120.0]) is None  # the process was gone once
    assert growth([100.0]) is None
