"""Voice end to end on real speech: questions spoken by espeak-ng (WAV files made here, 16 kHz by
sox), the real Whisper tiny.en, the real Silero VAD, espeak-ng as the spoken-reply voice, the
WebSocket and REST of the real app, with a scripted language model. No network.

espeak-ng and sox are part of the set-up: their absence fails these tests rather than skips them.
"""

from __future__ import annotations

import base64
import contextlib
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from assistant.config import Settings
from assistant.ports import SAMPLE_RATE
from assistant.server.app import create_app
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from assistant.voice.audio import float_to_pcm16, pcm16_to_float
from tests.support.audio import (
    encode_webm_opus,
    read_wav,
    require_speech_tools,
    speak,
    with_silence,
    words,
)
from tests.support.ws import assert_in_order, until

pytestmark = pytest.mark.integration

QUESTION = ("What is the weather like in London today?", ["weather", "london", "today"])
INTERRUPTION = ("Turn on the kitchen lights and play some music.", ["kitchen", "lights", "music"])
REPLY = "The capital of France is Paris. It is a beautiful city on the river Seine."
SPEED = 2.0  # audio is streamed twice as fast as it is spoken


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> dict[str, Path]:
    """``{"question": wav, "interruption": wav}``: espeak-ng speech at 16 kHz mono PCM16."""
    require_speech_tools()
    folder = tmp_path_factory.mktemp("voice")
    sentences = {"question": QUESTION[0], "interruption": INTERRUPTION[0]}
    return {key: speak(sentence, folder, key) for key, sentence in sentences.items()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The real speech models, built once for the module as the server builds them."""
    from assistant.registry import build_speech_to_text, build_text_to_speech, build_voice_activity

    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))
    return {
        "stt": build_speech_to_text(settings),  # Whisper tiny.en, int8
        "vad": build_voice_activity(settings),  # Silero; one stream per connection
        "tts": build_text_to_speech(settings),  # espeak-ng
    }


@pytest.fixture
def client_for(tmp_path):
    with contextlib.ExitStack() as stack:

        def make(llm=None, store=None, **models):
            app = create_app(Settings(data_dir=tmp_path), llm=llm or ScriptedLM(),
                             store=store or MemoryStore(), **models)  # fmt: skip
            return stack.enter_context(TestClient(app))

        yield make


def stream(ws, audio: np.ndarray, chunk_s: float = 0.1) -> None:
    """Binary frames of raw PCM16, paced at ``SPEED`` times real time."""
    step = int(chunk_s * SAMPLE_RATE)
    for begin in range(0, audio.shape[0], step):
        ws.send_bytes(float_to_pcm16(audio[begin : begin + step]))
        time.sleep(chunk_s / SPEED)  # the pacing is the behaviour: audio as a client streams it


def has_words(text: str, expected: list[str]) -> bool:
    return all(word in words(text) for word in expected)


def test_spoken_question_in_binary_frames_is_answered_without_a_commit(
    spoken, client_for, request
):
    """The models are built by the server itself (on the first audio); the store is real Redis."""
    from adapters.memory.redis import RedisSessionStore

    store = RedisSessionStore.from_url(request.getfixturevalue("redis_url"))
    client = client_for(store=store)
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        stream(ws, with_silence(read_wav(spoken["question"])))
        events = until(ws, "response.done")
    client.portal.call(store.aclose)
    kinds = [e["type"] for e in events]
    assert_in_order(kinds)
    assert kinds.count("input_audio_buffer.speech_started") == 1
    completed = events[kinds.index("conversation.item.input_audio_transcription.completed")]
    assert has_words(completed["transcript"], QUESTION[1]), completed["transcript"]
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0]["text"] == f"You said: {completed['transcript']}"
    user, reply = client.get(f"/v1/sessions/{session_id}/messages").json()["data"]
    assert user["content"][0] == {
        "type": "audio", "transcript": completed["transcript"],
        "duration_s": user["content"][0]["duration_s"]}  # fmt: skip
    assert 2.0 < user["content"][0]["duration_s"] < 4.0
    assert reply["status"] == "completed"


def test_partial_transcripts_arrive_while_the_user_speaks(models, client_for, tmp_path):
    """At real time, a 4 s sentence gets partial decodes; the words they agree on come as deltas
    before the turn ends."""
    sentence = "I would like to book a table for two people tomorrow evening at the Italian place."
    wav = speak(sentence, tmp_path, "long", "-s", "150")
    client = client_for(stt=models["stt"], vad=models["vad"])
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        audio = with_silence(read_wav(wav))
        step = SAMPLE_RATE // 10
        for begin in range(0, audio.shape[0], step):
            ws.send_bytes(float_to_pcm16(audio[begin : begin + step]))
            time.sleep(0.1)  # real time: the partial decodes happen while the user speaks
        events = until(ws, "conversation.item.input_audio_transcription.completed")
    kinds = [e["type"] for e in events]
    deltas = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
    assert deltas, kinds
    assert kinds.index("conversation.item.input_audio_transcription.delta") < kinds.index(
        "input_audio_buffer.speech_stopped"
    )
    partial = words("".join(e["delta"] for e in deltas))
    final = words(events[-1]["transcript"])
    assert has_words(events[-1]["transcript"], ["book", "table", "tomorrow"]), final
    assert partial[0] == final[0] and len(partial) <= len(final), (partial, final)


def test_wav_and_webm_opus_uploads_give_the_same_transcript(spoken, models, client_for):
    client = client_for(stt=models["stt"], vad=models["vad"])
    wav = spoken["question"].read_bytes()
    webm = encode_webm_opus(read_wav(spoken["question"]))
    transcripts = {}
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        for name, data in {"wav": wav, "webm": webm}.items():
            part = {"type": "input_audio", "audio": base64.b64encode(data).decode()}
            ws.send_json({"type": "conversation.item.create",
                          "item": {"type": "message", "role": "user", "content": [part]}})
            created = ws.receive_json()
            assert created["type"] == "conversation.item.created"
            completed = ws.receive_json()
            assert completed["type"] == "conversation.item.input_audio_transcription.completed"
            transcripts[name] = completed["transcript"]
    assert has_words(transcripts["wav"], QUESTION[1]), transcripts
    assert words(transcripts["wav"]) == words(transcripts["webm"]), transcripts
    for name, data, mime in [("q.wav", wav, "audio/wav"), ("q.webm", webm, "audio/webm")]:
        response = client.post("/v1/audio/transcriptions", files={"file": (name, data, mime)},
                               data={"model": "whisper-1"})  # fmt: skip
        assert response.status_code == 200
        assert words(response.json()["text"]) == words(transcripts["wav"])


def test_speech_during_a_streaming_reply_interrupts_it(spoken, models, client_for):
    llm = ScriptedLM(" ".join(f"word{i}" for i in range(400)), token_delay_s=0.02)
    client = client_for(llm=llm, stt=models["stt"], vad=models["vad"])
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        stream(ws, with_silence(read_wav(spoken["question"])))
        until(ws, "response.output_text.delta")
        llm.reply = "All right."
        stream(ws, read_wav(spoken["interruption"])[: SAMPLE_RATE])  # talking over the reply
        events = until(ws, "response.done")
        kinds = [e["type"] for e in events]
        assert "input_audio_buffer.speech_started" in kinds
        assert events[-1]["response"]["status"] == "cancelled"
        assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"
        stream(ws, with_silence(read_wav(spoken["interruption"])[SAMPLE_RATE:]))
        events = until(ws, "response.done")
    completed = [e for e in events
                 if e["type"] == "conversation.item.input_audio_transcription.completed"]  # fmt: skip
    assert has_words(completed[-1]["transcript"], INTERRUPTION[1]), completed
    assert events[-1]["response"]["status"] == "completed"
    messages = client.get(f"/v1/sessions/{session_id}/messages").json()["data"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    interrupted = messages[1]
    assert interrupted["status"] == "interrupted"
    assert 0 < len(interrupted["content"][0]["text"].split()) < 400


def test_spoken_replies_carry_pcm16_of_the_replys_length(spoken, models, client_for):
    client = client_for(llm=ScriptedLM(REPLY), **models)
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        ws.send_json({"type": "session.update", "session": {"modalities": ["text", "audio"]}})
        assert ws.receive_json()["session"]["modalities"] == ["text", "audio"]
        stream(ws, with_silence(read_wav(spoken["question"])))
        events = until(ws, "response.done")
    kinds = [e["type"] for e in events]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == REPLY and kinds.count("response.output_text.delta") > 5
    chunks = [base64.b64decode(e["delta"])
              for e in events if e["type"] == "response.output_audio.delta"]  # fmt: skip
    assert len(chunks) > 2 and all(len(c) % 2 == 0 for c in chunks)
    audio = pcm16_to_float(b"".join(chunks))  # (N,) float32 16 kHz
    reference = client.portal.call(models["tts"].synthesize, REPLY)  # the reply spoken in one go
    assert 0.75 < audio.shape[0] / reference.shape[0] < 1.33, (audio.shape, reference.shape)
    assert kinds.index("response.output_audio.done") < kinds.index("response.done")
    heard = client.portal.call(models["stt"].transcribe, audio)
    assert has_words(heard.text, ["capital", "france", "paris"]), heard.text


def test_transcribe_command(spoken, capsys):
    from assistant.cli import main

    assert main(["transcribe", str(spoken["question"])]) == 0
    assert has_words(capsys.readouterr().out, QUESTION[1])
