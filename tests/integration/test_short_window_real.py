"""Whisper tiny.en with its encoder on a 10 s window (``adapters.asr.short_window``, the default
for short utterances) against the same model on Whisper's 30 s, on espeak-ng speech: the same
words for whole sentences, and only utterances that fit take the short path."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.asr.short_window import ShortWindowDecoder
from assistant.config import ASRSettings, Settings
from assistant.ports import SAMPLE_RATE
from tests.support.audio import read_wav, require_speech_tools, speak, words

pytestmark = pytest.mark.integration

SENTENCES = (
    "What is the weather like in London today?",
    "Turn on the kitchen lights and play some music.",
    "I would like to book a table for two people tomorrow evening.",
    "Hello, my name is Alice and I need help with my account.",
    "What time do you open?",
    "I would like to order a pizza with olives.",
)


@pytest.fixture(scope="module")
def models():
    from assistant.registry import build_speech_to_text

    return {
        "short": build_speech_to_text(Settings()),
        "full": build_speech_to_text(Settings(asr=ASRSettings(short_window_s=0))),
    }


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    require_speech_tools()
    folder = tmp_path_factory.mktemp("short-window")
    return [read_wav(speak(text, folder, f"s{i}")) for i, text in enumerate(SENTENCES)]


async def test_short_sentences_get_the_same_words_on_the_short_window(models, clips):
    short, full = models["short"], models["full"]
    assert isinstance(short.short_window, ShortWindowDecoder) and full.short_window is None
    for clip in clips:
        assert short.short_window.fits(clip.shape[0], SAMPLE_RATE)
        direct = short.short_window.decode(clip, "en")  # the short path itself, no fallback
        assert direct is not None
        reference = (await full.transcribe(clip)).text
        assert words(direct) == words(reference), (direct, reference)
        assert words((await short.transcribe(clip)).text) == words(reference)


def test_an_utterance_longer_than_the_window_takes_the_30_s_path(models, clips):
    window = models["short"].short_window
    long = np.concatenate([clips[0], np.zeros(10 * SAMPLE_RATE, np.float32)])  # (N,)
    assert not window.fits(long.shape[0], SAMPLE_RATE)
    assert not window.fits(0, SAMPLE_RATE)
