"""``assistant bench`` keeps working: the quick bench on tiny settings (a real redis-server, real
server processes, real WebSockets) writes its JSON report with sane values. No timing thresholds:
speed is judged by the numbers the bench reports, not by this test."""

import json

import pytest

pytestmark = pytest.mark.integration


def test_quick_bench_on_tiny_settings_writes_the_report(tmp_path):
    from bench.run import run_bench

    path = tmp_path / "bench.json"
    report = run_bench(
        True, path, ["gateway", "redis"],
        sessions=[1, 5], turns=2, total_turns=4, idle_sessions=5, redis_turns=3,
        single_worker=True,  # off in a quick run unless asked for
    )  # fmt: skip
    data = json.loads(path.read_text())
    assert data["meta"]["quick"] is True and data["meta"]["wall_s"] > 0
    assert set(data) == {"meta", "gateway", "redis"}

    gateway = data["gateway"]
    assert "error" not in gateway, gateway
    assert gateway["sessions"] == 5
    assert gateway["turns_per_s"] > 0 and gateway["echo_turns_per_s"] > 0
    assert gateway["ratio_vs_echo"] > 0
    assert 0 < gateway["p50_ms"] <= gateway["p99_ms"]
    assert isinstance(gateway["idle_session_kb"], (int, float))
    assert [level["sessions"] for level in gateway["levels"]] == [1, 5]
    for level in gateway["levels"]:
        real, echo = level["gateway"], level["echo"]
        assert real["complete"] and echo["complete"], level
        assert real["turns"] == echo["turns"] == level["sessions"] * real["rounds"] * 2
        # The baseline answers a turn with as many events as the real server does.
        assert real["frames_per_turn"] == echo["frames_per_turn"] >= 5
        assert real["redis_commands_per_turn"] >= 1
    assert gateway["levels"][0]["gateway"]["rounds"] == 2  # 4 turns at 1 session: 2 sessions
    # Both servers ran with one worker per core; the one-worker-each comparison rides along.
    assert gateway["workers"] == gateway["setup"]["workers"] >= 1
    if gateway["workers"] > 1:
        single = gateway["single_worker"]
        assert single["complete"] and single["sessions"] == 5
        # CPU time is read in clock ticks (10 ms): a tiny run may see none.
        assert single["ratio_vs_echo"] > 0 and single["server_cpu_ms_per_turn"] >= 0

    redis = data["redis"]
    assert "error" not in redis, redis
    assert redis["round_trips_per_turn"] >= 1
    assert redis["commands_per_turn"] >= redis["round_trips_per_turn"]
    assert report["redis"]["round_trips_per_turn"] == redis["round_trips_per_turn"]


def test_cli_bench_runs_one_entry(tmp_path, capfd):
    """``assistant bench`` runs ``python -m bench`` as a process: its output is on the fds."""
    from assistant.cli import main

    path = tmp_path / "redis.json"
    assert main(["bench", "--quick", "--only", "redis", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["redis"]["round_trips_per_turn"] >= 1
    table = capfd.readouterr().out
    assert "round_trips_per_turn" in table and "baseline" in table


def test_an_unknown_entry_is_refused():
    from bench.run import run_bench

    with pytest.raises(ValueError, match="unknown bench entries"):
        run_bench(True, None, ["nope"])


def test_voice_to_first_token_entry_reports_the_spoken_turn_against_the_typed_one(tmp_path):
    """The real server, speech models and SmolLM2: a spoken question's first reply token, timed
    from the end of the voice, with the same question typed as the baseline."""
    from bench.run import run_bench

    path = tmp_path / "voice.json"
    run_bench(True, path, ["voice_to_first_token"])
    voice = json.loads(path.read_text())["voice_to_first_token"]
    assert "error" not in voice, voice
    assert voice["utterances"] == 2 and voice["repeats"] == 1 and voice["runs"] == 2
    assert voice["median_ms"] > 0 and voice["text_median_ms"] > 0
    assert voice["ratio_vs_text"] == pytest.approx(
        voice["median_ms"] / voice["text_median_ms"], abs=0.01
    )
    assert voice["overhead_ms"] == pytest.approx(
        voice["median_ms"] - voice["text_median_ms"], abs=0.2
    )
    assert 0 < voice["speech_stopped_ms"] <= voice["transcript_ms"] <= voice["median_ms"]
    assert voice["first_token_ms"] == voice["median_ms"]
    assert voice["silence_wait_ms"] == 500  # the server's default silence_duration_ms
    assert len(voice["voice_runs_ms"]) == len(voice["text_runs_ms"]) == 2
    transcripts = [t.lower() for t in voice["transcripts"]]
    assert transcripts and all(t.strip() for t in transcripts), voice
    assert any("weather" in t or "london" in t for t in transcripts), transcripts
    assert any("kitchen" in t or "lights" in t for t in transcripts), transcripts
