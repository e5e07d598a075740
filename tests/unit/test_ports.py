"""The ports' own public methods: limits, timeouts and error mapping, the same for every adapter."""

from __future__ import annotations

import time

import numpy as np
import pytest

from assistant.errors import ConfigurationError, InvalidRequestError, ModelError, ModelTimeoutError
from assistant.ports import (
    SAMPLE_RATE,
    EmbeddingTable,
    SpeechToTextCapabilities,
    Transcript,
    VoiceActivityStream,
)
from assistant.testing.language_models import ScriptedLM
from assistant.testing.speech import FakeSTT, FakeVAD


async def test_speech_to_text_refuses_audio_longer_than_the_model_takes():
    stt = FakeSTT(text="hello")
    stt.capabilities = SpeechToTextCapabilities(max_audio_s=1.0)
    ok = await stt.transcribe(np.zeros(SAMPLE_RATE, np.float32))
    assert ok == Transcript("hello", "en", 1.0)
    with pytest.raises(InvalidRequestError) as refused:
        await stt.transcribe(np.zeros(SAMPLE_RATE + 1, np.float32))
    assert refused.value.code == "audio_too_long"
    assert stt.calls == [1.0]  # the refused audio never reached the adapter


async def test_each_vad_stream_has_its_own_state_over_one_model():
    vad = FakeVAD()
    first, second = vad.stream(), vad.stream()
    assert isinstance(first, VoiceActivityStream) and first is not second
    loud = np.full(300, 0.5, np.float32)  # less than a window: waits in the first stream
    assert (await first.probabilities(loud)).shape == (0,)
    assert (await second.probabilities(np.zeros(512, np.float32))).tolist() == [pytest.approx(0.02)]
    assert (await first.probabilities(loud)).tolist() == [pytest.approx(0.95)]  # 600 >= 512


class _Broken(VoiceActivityStream):
    def __init__(self, model, behaviour) -> None:
        super().__init__(model)
        self.behaviour = behaviour

    def reset(self) -> None:
        pass

    def _probabilities_impl(self, audio):
        return self.behaviour()


async def test_a_vad_stream_maps_failures_and_timeouts_to_model_codes():
    vad = FakeVAD()
    vad.timeout_s = 0.05

    def fail():
        raise RuntimeError("onnx fell over")

    with pytest.raises(ModelError) as failed:
        await _Broken(vad, fail).probabilities(np.zeros(512, np.float32))
    assert failed.value.code == "model_error" and "RuntimeError" in failed.value.message
    assert "onnx fell over" not in failed.value.message  # internals are for the log only

    def hang():
        time.sleep(0.5)  # the blocking call outlives the port's timeout: that is the test

    with pytest.raises(ModelTimeoutError) as slow:
        await _Broken(vad, hang).probabilities(np.zeros(512, np.float32))
    assert slow.value.code == "model_timeout"


def test_an_embedding_table_embeds_ids_with_the_models_scale():
    weight = np.arange(12, dtype=np.float32).reshape(4, 3)  # (V=4, H=3)
    table = EmbeddingTable(weight, lambda text: [len(text) % 4], scale=2.0)
    np.testing.assert_array_equal(table.embed([1, 3]), weight[[1, 3]] * 2.0)
    assert table.tokenize("abcde") == [1]


def test_a_model_without_the_embeddings_capability_has_no_table():
    with pytest.raises(ConfigurationError):
        ScriptedLM().input_embeddings()
