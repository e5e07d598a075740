"""The turn detector on synthetic probability sequences. Windows are 512 samples = 32 ms; the audio
fed is ``arange``, so every sample's value is its own index and an utterance shows where it was cut.

Defaults: threshold 0.5 (silence below 0.35), prefix padding 300 ms, silence 500 ms (16 windows),
min speech 150 ms (5 windows)."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.voice.turn_detection import (
    SpeechStarted,
    SpeechStopped,
    TurnDetectionConfig,
    TurnDetector,
)

W = 512
SPEECH, SILENCE, MIDDLE = 0.9, 0.05, 0.4  # MIDDLE: between the two thresholds


def run(probs, detector=None):
    """Feed window by window; returns [(window index, event)]."""
    detector = detector or TurnDetector()
    found = []
    for k, p in enumerate(probs):
        audio = np.arange(k * W, (k + 1) * W, dtype=np.float32)  # (512,) sample indices
        found.extend((k, event) for event in detector.feed([p], audio))
    return found


def seq(*runs):
    """seq((0.9, 10), (0.05, 3)) -> ten 0.9s then three 0.05s."""
    return [p for p, n in runs for _ in range(n)]


def test_start_and_stop_timings_and_utterance():
    events = run(seq((SILENCE, 20), (SPEECH, 30), (SILENCE, 30)))
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechStopped]
    (k_start, started), (k_stop, stopped) = events
    assert k_start == 24  # the 5th speech window confirms the turn (160 ms >= 150 ms)
    assert started == SpeechStarted(audio_start_ms=20 * 32 - 300)
    assert k_stop == 50 + 16 - 1  # 16 silent windows (512 ms >= 500 ms)
    assert stopped.audio_end_ms == 66 * 32
    assert stopped.audio_start_ms == 340
    assert stopped.reason == "silence"
    np.testing.assert_array_equal(stopped.audio, np.arange(340 * 16, 66 * 32 * 16))
    assert stopped.duration_ms == 66 * 32 - 340


def test_prefix_padding_is_cut_at_the_stream_start():
    (_, started), (_, stopped) = run(seq((SILENCE, 3), (SPEECH, 10), (SILENCE, 20)))
    assert started.audio_start_ms == 0
    assert stopped.audio[0] == 0


@pytest.mark.parametrize("padding_ms", [0, 100, 300, 1000])
def test_prefix_padding_amount(padding_ms):
    detector = TurnDetector(TurnDetectionConfig(prefix_padding_ms=padding_ms))
    (_, started), (_, stopped) = run(seq((SILENCE, 40), (SPEECH, 10), (SILENCE, 20)), detector)
    assert started.audio_start_ms == 40 * 32 - padding_ms
    assert stopped.audio[0] == (40 * 32 - padding_ms) * 16


@pytest.mark.parametrize("blip_windows", [1, 2, 4])
def test_short_blips_are_ignored(blip_windows):
    probs = seq((SILENCE, 10), (SPEECH, blip_windows), (SILENCE, 10)) * 3 + seq((SILENCE, 20))
    detector = TurnDetector()
    assert run(probs, detector) == []
    assert not detector.in_speech
    assert detector.commit() is None


def test_a_blip_before_speech_does_not_move_the_start():
    events = run(seq((SILENCE, 20), (SPEECH, 2), (SILENCE, 10), (SPEECH, 10), (SILENCE, 20)))
    assert events[0][1].audio_start_ms == 32 * 32 - 300


def test_min_speech_counts_windows_between_the_thresholds():
    # One window over the threshold then values in the hysteresis band still make a turn.
    events = run(seq((SILENCE, 10), (SPEECH, 1), (MIDDLE, 4), (SILENCE, 20)))
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechStopped]
    # ... but values in the band alone never start one.
    assert run(seq((SILENCE, 10), (MIDDLE, 40), (SILENCE, 20))) == []


def test_silence_shorter_than_silence_duration_does_not_end_the_turn():
    probs = seq((SILENCE, 10), (SPEECH, 20), (SILENCE, 15), (SPEECH, 20), (SILENCE, 20))
    events = run(probs)
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechStopped]
    assert events[1][1].audio_end_ms == (10 + 20 + 15 + 20 + 16) * 32


def test_middle_values_neither_start_nor_reset_the_silence():
    # In the band right after speech: not silence, so no stop however long it lasts.
    assert len(run(seq((SILENCE, 10), (SPEECH, 10), (MIDDLE, 60)))) == 1
    # Once silence has begun, band values do not reset it: the stop comes 16 windows after it.
    events = run(seq((SILENCE, 10), (SPEECH, 10), (SILENCE, 4), (MIDDLE, 30)))
    assert events[1][1].audio_end_ms == (20 + 16) * 32


def test_custom_silence_duration():
    detector = TurnDetector(TurnDetectionConfig(silence_duration_ms=200))  # 7 windows
    events = run(seq((SILENCE, 10), (SPEECH, 10), (SILENCE, 10)), detector)
    assert events[1][1].audio_end_ms == (20 + 7) * 32


def test_max_speech_cuts_a_long_turn_and_the_next_starts_where_it_ended():
    detector = TurnDetector(TurnDetectionConfig(max_speech_ms=1000, prefix_padding_ms=0))
    events = run(seq((SILENCE, 10), (SPEECH, 45), (SILENCE, 20)), detector)
    kinds = [type(e) for _, e in events]
    assert kinds == [SpeechStarted, SpeechStopped, SpeechStarted, SpeechStopped]
    first, second = events[1][1], events[3][1]
    assert first.reason == "max_duration"
    assert first.audio_end_ms - first.audio_start_ms == 32 * 32  # the first window past 1000 ms
    assert events[2][1].audio_start_ms == first.audio_end_ms
    assert second.reason == "silence"
    assert second.audio[0] == first.audio[-1] + 1  # no sample given twice


def test_the_next_turn_prefix_never_reaches_into_the_previous_turn():
    events = run(seq((SILENCE, 20), (SPEECH, 10), (SILENCE, 16), (SPEECH, 10), (SILENCE, 20)))
    first, second_start = events[1][1], events[2][1]
    assert second_start.audio_start_ms == first.audio_end_ms  # padding cut at the earlier end


def test_streaming_in_odd_chunks_matches_one_call():
    rng = np.random.default_rng(1)
    probs = seq((SILENCE, 15), (SPEECH, 25), (SILENCE, 10), (SPEECH, 12), (SILENCE, 25))
    audio = np.arange(len(probs) * W, dtype=np.float32)  # (K * 512,)
    whole = TurnDetector().feed(probs, audio)

    detector, streamed, fed, given = TurnDetector(), [], 0, 0
    while fed < audio.shape[0]:
        size = int(rng.integers(1, 1500))
        chunk = audio[fed : fed + size]
        fed += chunk.shape[0]
        ready = fed // W - given  # windows completed by this chunk, as a VAD reports them
        streamed += detector.feed(probs[given : given + ready], chunk)
        given += ready
    assert streamed == whole
    for a, b in zip(streamed, whole, strict=True):
        if isinstance(a, SpeechStopped):
            np.testing.assert_array_equal(a.audio, b.audio)


def test_memory_stays_bounded_while_idle_and_after_a_turn():
    padding = 300 * 16
    detector = TurnDetector()
    run(seq((SILENCE, 2000)), detector)  # 64 s of silence
    assert detector.retained_samples <= padding + W
    run(seq((SPEECH, 2), (SILENCE, 500), (SPEECH, 30)), detector)  # a blip, then a turn
    assert detector.retained_samples >= 30 * W
    run(seq((SILENCE, 500)), detector)
    assert not detector.in_speech
    assert detector.retained_samples <= padding + W


def test_commit_ends_a_turn_in_progress():
    detector = TurnDetector()
    run(seq((SILENCE, 20), (SPEECH, 10)), detector)
    assert detector.in_speech
    stopped = detector.commit()
    assert stopped is not None and stopped.reason == "commit"
    assert stopped.audio_end_ms == detector.position_ms == 30 * 32
    assert stopped.audio.shape == ((30 * 32 - (20 * 32 - 300)) * 16,)
    assert not detector.in_speech and detector.commit() is None


def test_reset_restarts_the_clock():
    detector = TurnDetector()
    run(seq((SILENCE, 20), (SPEECH, 10)), detector)
    detector.reset()
    assert detector.position_ms == 0 and not detector.in_speech
    (_, started), _ = run(seq((SPEECH, 10), (SILENCE, 20)), detector)
    assert started.audio_start_ms == 0


def test_more_probabilities_than_samples_is_an_error():
    with pytest.raises(ValueError):
        TurnDetector().feed([0.1, 0.1], np.zeros(W + 100, np.float32))


def test_samples_wait_for_their_probability():
    detector = TurnDetector()
    assert detector.feed([], np.zeros(W * 3, np.float32)) == []
    assert detector.position_ms == 0
    detector.feed([0.1, 0.1, 0.1], np.zeros(0, np.float32))
    assert detector.position_ms == 3 * 32


def test_config_validation():
    with pytest.raises(ValueError):
        TurnDetectionConfig(threshold=0.3, neg_threshold=0.6)
    with pytest.raises(ValueError):
        TurnDetectionConfig(threshold=0.0)
    with pytest.raises(ValueError):
        TurnDetectionConfig(silence_duration_ms=-1)
    assert TurnDetectionConfig().silence_threshold == pytest.approx(0.35)
    assert TurnDetectionConfig(neg_threshold=0.2).silence_threshold == 0.2
