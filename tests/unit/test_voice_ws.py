"""Voice over the WebSocket and REST, in process: the real app and voice pipeline on fakes (a
loudness VAD, a speech-to-text model that counts loud audio, tone "speech" out), a scripted
language model and the in-memory store."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest
from fastapi.testclient import TestClient

from assistant.config import Settings, VoiceSettings
from assistant.ports import SAMPLE_RATE
from assistant.server.app import create_app
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from assistant.testing.speech import SENTENCE, FakeSTT, FakeTTS, FakeVAD
from assistant.voice.audio import float_to_pcm16, pcm16_to_float
from tests.support.audio import chunks, silence, tone
from tests.support.ws import assert_in_order
from tests.support.ws import until as _until

QUESTION = " ".join(SENTENCE)


@pytest.fixture
def make_client():
    clients = []

    def make(voice: VoiceSettings | None = None, llm: ScriptedLM | None = None, **fakes):
        settings = Settings(voice=voice or VoiceSettings())
        parts = {"stt": FakeSTT(), "vad": FakeVAD(), "tts": FakeTTS(), **fakes}
        app = create_app(settings, llm=llm or ScriptedLM(), store=MemoryStore(), **parts)
        client = TestClient(app)
        clients.append(client.__enter__())
        return client, parts

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def until(ws, kind):
    return _until(ws, kind, limit=500)


def stream(ws, audio, seconds=0.1):
    for chunk in chunks(audio, seconds):
        ws.send_bytes(chunk)


def stored(client, session_id):
    return client.get(f"/v1/sessions/{session_id}/messages").json()["data"]


def wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(float_to_pcm16(audio))
    return buffer.getvalue()


def test_session_created_advertises_audio(make_client):
    client, _ = make_client()
    with client.websocket_connect("/v1/realtime") as ws:
        session = ws.receive_json()["session"]
    assert session["modalities"] == ["text"]
    assert (session["input_audio_format"], session["output_audio_format"]) == ("pcm16", "pcm16")
    assert session["audio_sample_rate"] == 16_000
    detection = session["turn_detection"]
    assert detection["type"] == "server_vad"
    assert (detection["threshold"], detection["prefix_padding_ms"]) == (0.5, 300)
    assert detection["silence_duration_ms"] == 500


def test_spoken_turn_is_detected_transcribed_stored_and_answered(make_client):
    client, _ = make_client()
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        stream(ws, np.concatenate([silence(0.3), tone(1.0), silence(0.8)]))
        events = until(ws, "response.done")
    kinds = [e["type"] for e in events]
    assert_in_order(kinds)
    by_type = {e["type"]: e for e in events}
    item_id = by_type["input_audio_buffer.speech_started"]["item_id"]
    assert by_type["input_audio_buffer.committed"]["item_id"] == item_id
    completed = by_type["conversation.item.input_audio_transcription.completed"]
    assert (completed["item_id"], completed["transcript"]) == (item_id, QUESTION)
    item = by_type["conversation.item.created"]["item"]
    assert item["id"] == item_id and item["content"][0]["type"] == "input_audio"
    assert item["content"][0]["transcript"] == QUESTION
    assert by_type["response.done"]["response"]["output"][0]["content"][0]["text"] == (
        f"You said: {QUESTION}"
    )
    user, reply = stored(client, session_id)
    assert user["id"] == item_id and user["content"][0]["type"] == "audio"
    assert user["content"][0]["transcript"] == QUESTION
    assert 1.3 < user["content"][0]["duration_s"] < 2.0
    assert reply["status"] == "completed"


def test_base64_append_and_manual_commit(make_client):
    client, _ = make_client()
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        ws.send_json({"type": "session.update", "session": {"turn_detection": None}})
        assert ws.receive_json()["session"]["turn_detection"] is None
        audio = np.concatenate([tone(0.5), silence(1.0)])  # no VAD: silence ends nothing
        ws.send_json({"type": "input_audio_buffer.append",
                      "audio": base64.b64encode(float_to_pcm16(audio)).decode()})
        ws.send_json({"type": "input_audio_buffer.commit", "event_id": "c1"})
        events = until(ws, "conversation.item.created")
        kinds = [e["type"] for e in events]
        assert kinds == [
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.completed",
            "conversation.item.created",
        ]
        ws.send_json({"type": "response.create"})  # no automatic response without server VAD
        done = until(ws, "response.done")[-1]
    assert done["response"]["status"] == "completed"


def test_barge_in_cancels_the_streaming_reply(make_client):
    llm = ScriptedLM(" ".join(f"w{i}" for i in range(400)), token_delay_s=0.01)
    client, _ = make_client(llm=llm)
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        stream(ws, np.concatenate([tone(0.6), silence(0.8)]))
        until(ws, "response.output_text.delta")
        stream(ws, tone(0.4))  # the user talks over the reply
        events = until(ws, "response.done")
        assert "input_audio_buffer.speech_started" in [e["type"] for e in events]
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        llm.reply = "ok"
        stream(ws, silence(0.8))  # the interruption is a turn of its own, answered in turn
        events = until(ws, "response.done")
        assert "conversation.item.created" in [e["type"] for e in events]
        assert events[-1]["response"]["status"] == "completed"
    messages = stored(client, session_id)
    assert [m["role"] for m in messages][:3] == ["user", "assistant", "user"]
    assert messages[1]["status"] == "interrupted"
    assert 0 < len(messages[1]["content"][0]["text"].split()) < 400


def test_interrupt_response_off_lets_the_reply_finish(make_client):
    llm = ScriptedLM(" ".join(f"w{i}" for i in range(30)), token_delay_s=0.01)
    client, _ = make_client(llm=llm)
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        ws.send_json({"type": "session.update",
                      "session": {"turn_detection": {"interrupt_response": False}}})
        assert ws.receive_json()["session"]["turn_detection"]["interrupt_response"] is False
        stream(ws, np.concatenate([tone(0.6), silence(0.8)]))
        until(ws, "response.output_text.delta")
        stream(ws, tone(0.4))
        done = until(ws, "response.done")[-1]
    assert done["response"]["status"] == "completed"


def test_spoken_replies_stream_audio_beside_the_text(make_client):
    client, parts = make_client(llm=ScriptedLM("Paris is the capital. It is in France."))
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        ws.send_json({"type": "session.update",
                      "session": {"modalities": ["text", "audio"], "voice": "en-gb"}})
        session = ws.receive_json()["session"]
        assert session["modalities"] == ["text", "audio"] and session["voice"] == "en-gb"
        stream(ws, np.concatenate([tone(0.6), silence(0.8)]))
        events = until(ws, "response.done")
    kinds = [e["type"] for e in events]
    audio = [e for e in events if e["type"] == "response.output_audio.delta"]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Paris is the capital. It is in France."
    pcm = pcm16_to_float(b"".join(base64.b64decode(e["delta"]) for e in audio))
    assert parts["tts"].spoken == ["Paris is the capital.", "It is in France."]
    assert pcm.shape[0] == sum(int(len(s) * 0.01 * SAMPLE_RATE) for s in parts["tts"].spoken)
    assert kinds.index("response.output_audio.done") < kinds.index("response.done")
    assert audio[0]["response_id"] == events[-1]["response"]["id"]


def test_uploaded_audio_file_is_transcribed_into_the_item(make_client):
    client, _ = make_client()
    data = base64.b64encode(wav_bytes(np.concatenate([tone(1.0), silence(0.3)]))).decode()
    item = {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Listen:"}, {"type": "input_audio", "audio": data}]}
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        ws.send_json({"type": "conversation.item.create", "item": item})
        created, completed = ws.receive_json(), ws.receive_json()
    assert created["type"] == "conversation.item.created"
    assert created["item"]["content"][1] == {
        "type": "input_audio", "text": None, "transcript": QUESTION, "image_sha256": None}
    assert completed["type"] == "conversation.item.input_audio_transcription.completed"
    assert (completed["item_id"], completed["content_index"]) == (created["item"]["id"], 1)
    [message] = stored(client, session_id)
    assert message["content"][1]["duration_s"] == pytest.approx(1.3, abs=0.01)


def test_rest_transcription_is_openai_compatible(make_client):
    client, _ = make_client()
    wav = wav_bytes(tone(1.0))
    files = {"file": ("question.wav", wav, "audio/wav")}
    response = client.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
    assert response.status_code == 200 and response.json() == {"text": QUESTION}
    response = client.post("/v1/audio/transcriptions", files=files,
                           data={"response_format": "verbose_json"})
    assert response.json()["duration"] == pytest.approx(1.0)
    response = client.post("/v1/audio/transcriptions", files=files, data={"response_format": "text"})
    assert response.text == QUESTION + "\n"
    bad = client.post("/v1/audio/transcriptions", files={"file": ("x.wav", b"RIFFnope", "audio/wav")})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_audio"
    missing = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert missing.status_code == 400


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (lambda ws: ws.send_bytes(b"\x00\x01\x02"), "invalid_audio_bytes"),
        (lambda ws: ws.send_bytes(b"\x00" * 4096), "audio_too_large"),
        (lambda ws: ws.send_json({"type": "input_audio_buffer.append", "audio": "%%%"}),
         "invalid_base64"),
        (lambda ws: ws.send_json({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(b"\x01" * 3).decode()}),
         "invalid_audio_bytes"),
        (lambda ws: ws.send_json({"type": "input_audio_buffer.commit"}),
         "input_audio_buffer_commit_empty"),
        (lambda ws: ws.send_json({"type": "session.update",
                                  "session": {"input_audio_format": "pcm24"}}),
         "unsupported_audio_format"),
        (lambda ws: ws.send_json({"type": "session.update", "session": {"voice": "klingon"}}),
         "unsupported_voice"),
        (lambda ws: ws.send_json({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_audio", "audio": base64.b64encode(b"junk" * 50).decode()}]}}),
         "invalid_audio"),
    ],
)
def test_bad_audio_gets_a_coded_error_and_the_socket_stays_usable(make_client, send, code):
    tts = FakeTTS()
    tts.capabilities = type(tts.capabilities)(voices=("en-us", "en-gb"))
    client, _ = make_client(VoiceSettings(max_chunk_bytes=2048), tts=tts)
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        send(ws)
        error = ws.receive_json()
        assert error["type"] == "error" and error["error"]["code"] == code, error
        stream(ws, np.concatenate([tone(1.0), silence(0.8)]), 0.05)  # still works: a turn
        done = until(ws, "response.done")[-1]
    assert done["response"]["status"] == "completed"


def test_a_manual_buffer_refuses_audio_past_the_turn_limit(make_client):
    client, _ = make_client(VoiceSettings(turn_detection=False, max_turn_s=1.0))
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        stream(ws, tone(1.0))
        ws.send_bytes(float_to_pcm16(tone(0.1)))
        assert ws.receive_json()["error"]["code"] == "audio_too_long"
        ws.send_json({"type": "input_audio_buffer.commit"})
        completed = until(ws, "conversation.item.input_audio_transcription.completed")[-1]
    assert completed["transcript"] == QUESTION


def test_clear_drops_buffered_speech(make_client):
    client, _ = make_client()
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        stream(ws, tone(0.5))
        assert ws.receive_json()["type"] == "input_audio_buffer.speech_started"
        ws.send_json({"type": "input_audio_buffer.clear"})
        assert ws.receive_json()["type"] == "input_audio_buffer.cleared"
        ws.send_json({"type": "input_audio_buffer.commit"})
        assert ws.receive_json()["error"]["code"] == "input_audio_buffer_commit_empty"


def test_voice_turned_off(make_client):
    client, _ = make_client(VoiceSettings(enabled=False))
    with client.websocket_connect("/v1/realtime") as ws:
        assert ws.receive_json()["session"]["turn_detection"] is None
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_json()["error"]["code"] == "unsupported_frame"
        ws.send_json({"type": "input_audio_buffer.commit"})
        assert ws.receive_json()["error"]["code"] == "unsupported_content"
    response = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"x", "audio/wav")})
    assert response.json()["error"]["code"] == "unsupported_content"
