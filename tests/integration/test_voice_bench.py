"""The speech benchmark runs (quick) and reports streaming against the after-the-end baseline."""

import pytest

pytestmark = pytest.mark.integration


def test_measure_asr_quick():
    from bench.asr import measure_asr

    report = measure_asr(quick=True)
    assert report["utterances"] == 2 and report["repeats"] == 1
    assert report["final_after_stop_ms_baseline"] > 0
    assert report["ratio"] == pytest.approx(
        report["final_after_stop_ms"] / report["final_after_stop_ms_baseline"], abs=0.01
    )
    assert report["ratio"] < 1.0  # the final transcript is ready sooner than a decode after the end
    assert report["same_words_as_baseline"] == 1.0
    assert report["decodes_per_utterance"] >= 1
