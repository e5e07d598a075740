"""The soak driver (``bench.soak``) on a tiny run: a real ``assistant serve`` with two workers and
its own redis-server, three scripted sessions for a few seconds with images and resumes often.
The report must hold every field, sampled for every server process (the workers' caches from
their /metrics), and no error. No timing thresholds: how much memory grows in a run this short
is not judged here. Then the warm-up rule (``bench.soak_caches``) on made-up samples."""

import pytest

from bench.run import format_table
from bench.soak import SoakConfig, run_soak
from bench.soak_caches import parse_metrics, warm_index
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
    # Only growth or a warm-up not over may be found in a run this short.
    found = report.get("findings", [])
    assert all("RSS grew" in f or "warm-up" in f for f in found), found
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
        assert isinstance(report["growth_after_first_minute"][name], float)
        after_warm_up = report["growth_after_warmup"][name]  # none when warm only at the end
        judged = report["warm_up"]["sample"] not in (None, samples - 1)
        assert isinstance(after_warm_up, float) if judged else after_warm_up is None, name
    assert "redis-server" in report["processes"]["redis"]["cmdline"]
    assert report["malloc_env"] == {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072"}
    redis = report["redis_used_memory_mb"]
    assert len(redis) == samples and redis[-1] > redis[0] > 0  # the conversations are stored
    assert report["redis_keys"][-1] > report["redis_keys"][0]
    # Each worker's caches at every sample, read from its own /metrics.
    workers = {"worker-1", "worker-2"}
    assert set(report["caches"]) == workers
    for name in workers:
        caches = report["caches"][name]
        assert {"parsed_messages", "prompts", "session_meta", "token_counts"} <= set(caches)
        for cache in caches.values():
            assert len(cache["entries"]) == samples and cache["capacity"] > 0
            assert all(entries is not None for entries in cache["entries"]), name
        assert caches["parsed_messages"]["entries"][-1] > 0  # the turns' messages
    warm = report["warm_up"]
    assert set(warm) == {"sample", "after_s", "caches_filling"}
    if warm["sample"] is not None:
        assert warm["after_s"] == report["sample_times_s"][warm["sample"]]
    left = report["after_clients_left"]
    assert set(left["rss_mb"]) == names and set(left["fds"]) == names

    table = format_table({"meta": {"wall_s": 1.0}, "soak": report})
    assert "3 sessions x 0.2 min: turns" in table
    assert "worker-2 RSS MB start/end" in table and "redis used_memory MB" in table
    assert "worker-1 RSS MB at each sample" in table and "warm-up (the caches that fill" in table


def test_growth_is_measured_from_the_sample_after_warm_up():
    assert growth([100.0, 200.0, 210.0]) == 0.05  # by default, the one after the first minute
    assert growth([100.0, 110.0]) == 0.1  # no sample after warm-up: from the start
    assert growth([100.0, 200.0, 210.0, 220.0], warm=2) == round(10 / 210, 4)
    assert growth([100.0, 200.0, 210.0], warm=2) is None  # warm only at the end: nothing to judge
    assert growth([100.0, None, 120.0]) is None  # the process was gone once
    assert growth([100.0]) is None


def _samples(**series):
    """Made-up samples of worker-1: ``cache=([entries per sample], capacity)``."""
    count = len(next(iter(series.values()))[0])
    return [{"worker-1": {name: [entries[i], capacity] for name, (entries, capacity) in
                          series.items()}} for i in range(count)]  # fmt: skip


def test_the_warm_up_ends_when_the_caches_that_fill_have_filled():
    # parsed fills up at sample 2; prompts (the sessions open now) never fills: not waited for
    fills = _samples(parsed=([0, 60, 100, 100, 100], 100), prompts=([0, 90, 110, 95, 105], 4096))
    assert warm_index(fills) == (2, ["worker-1 parsed 60/100"])
    # a cache emptied when full (the renderer's) stays warm once it has been full
    fills = _samples(rendered=([0, 20, 100, 5, 40, 80], 100))
    assert warm_index(fills) == (2, ["worker-1 rendered 20/100"])
    # one that never fills is warm from the start: what it gains counts as growth after warm-up
    rising = _samples(session_meta=([0, 100, 200, 300, 400, 500, 600], 4096))
    assert warm_index(rising) == (1, [])
    # one that fills only at the end keeps the warm-up to the end (too short a run to judge)
    late = _samples(parsed=([0, 20, 40, 60, 80, 100], 100), prompts=([0, 9, 9, 9, 9, 9], 4096))
    assert warm_index(late) == (5, ["worker-1 parsed 80/100"])
    # a token-bounded cache evicting whole entries stays a little under its bound: full at 95 %
    fills = _samples(kv_cache_tokens=([0, 9000, 15700, 14900, 15800], 16384))
    assert warm_index(fills) == (2, ["worker-1 kv_cache_tokens 9000/16384"])
    # a worker not read at a sample: that sample is not warm
    fills = _samples(parsed=([0, 100, 100, 100], 100))
    del fills[1]["worker-1"]
    assert warm_index(fills) == (2, ["worker-1 parsed not read"])


def test_the_caches_and_the_worker_are_read_from_the_metrics_text():
    text = (
        "# TYPE assistant_cache_entries gauge\n"
        'assistant_cache_entries{cache="prompts"} 12.0\n'
        "# TYPE assistant_cache_capacity gauge\n"
        'assistant_cache_capacity{cache="prompts"} 4096.0\n'
        "# TYPE assistant_worker_pid gauge\n"
        "assistant_worker_pid 4242.0\n"
    )
    assert parse_metrics(text) == (4242, {"prompts": [12, 4096]})
