"""Early replies to spoken turns on the real server (``assistant serve``: Silero VAD, Whisper
tiny.en, SmolLM2, its own redis-server), speech made by espeak-ng and streamed at real time over a
real WebSocket: a pause in the middle of what the user says never gets a reply of its own, nor a
stored half message; only the whole utterance is stored and answered, once.

The waits are the session's (``session.update``), long enough that a loaded machine's Whisper
decodes its pause before the turn could end; the pauses are waited out on what the server
reports (``/metrics``), not on a clock, where the test needs the server to have seen them.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
import websockets

from assistant.ports import SAMPLE_RATE
from assistant.voice.audio import float_to_pcm16
from tests.support.audio import read_wav, require_speech_tools, speak, words
from tests.support.server import ServerProcess, link_prepared_models, serve_env
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

FRAME_S = 0.04


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("early-data")
    link_prepared_models(data_dir)
    env = serve_env(data_dir, ASSISTANT_VOICE__PRELOAD="true", ASSISTANT_LLM__MAX_NEW_TOKENS="12")
    with ServerProcess(env) as process:
        yield process


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, np.ndarray]:
    require_speech_tools()
    folder = tmp_path_factory.mktemp("early-speech")
    sentences = {
        "order": "I would like to order",
        "pizza": "a pizza with olives",
        "question": "What time do you open?",
        "sundays": "On Sundays.",
    }
    return {key: read_wav(speak(text, folder, key)) for key, text in sentences.items()}


def early_counts(server: ServerProcess) -> dict[str, int]:
    text = httpx.get(server.url("/metrics"), timeout=10).raise_for_status().text
    counts = {"started": 0, "committed": 0, "dropped": 0}
    for line in text.splitlines():
        if line.startswith("assistant_voice_early_responses_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return counts


async def send_real_time(ws, audio: np.ndarray) -> None:
    """40 ms PCM16 frames, each when a microphone would have it."""
    step = int(FRAME_S * SAMPLE_RATE)
    started = time.perf_counter()
    for begin in range(0, audio.shape[0], step):
        end = min(begin + step, audio.shape[0])
        await asyncio.sleep(max(0.0, started + end / SAMPLE_RATE - time.perf_counter()))
        await ws.send(float_to_pcm16(audio[begin:end]))  # the pacing is the behaviour


async def silence_until(ws, condition, limit_s: float) -> None:
    """Real-time silence until ``condition()`` holds (at most ``limit_s`` of it)."""
    frame = np.zeros(int(FRAME_S * SAMPLE_RATE), np.float32)

    async def pause() -> None:
        while True:
            await send_real_time(ws, frame)

    sender = asyncio.create_task(pause())
    try:
        await wait_for_async(condition, what="the server to judge the pause", timeout_s=limit_s)
    finally:
        sender.cancel()


async def open_session(ws, *, silence_ms: int, eager_ms: int) -> str:
    created = json.loads(await ws.recv())
    detection = {"type": "server_vad", "silence_duration_ms": silence_ms,
                 "eager_silence_ms": eager_ms}  # fmt: skip
    await ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": detection}}))
    while json.loads(await ws.recv())["type"] != "session.updated":
        pass
    return str(created["session"]["id"])


async def events_until_done(ws) -> list[dict]:
    events: list[dict] = []
    while not events or events[-1]["type"] != "response.done":
        events.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
        assert events[-1]["type"] != "error", events[-1]
    return events


def assert_one_turn(server: ServerProcess, session_id: str, events: list[dict], full: list[str]):
    """One user message (the whole utterance) and one reply to it, both stored and sent once."""
    kinds = [e["type"] for e in events]
    assert kinds.count("input_audio_buffer.speech_started") == 1, kinds
    assert kinds.count("conversation.item.input_audio_transcription.completed") == 1, kinds
    assert kinds.count("response.created") == 1 and kinds.count("response.done") == 1, kinds
    completed = kinds.index("conversation.item.input_audio_transcription.completed")
    assert completed < kinds.index("response.created")  # no reply before the turn ended
    transcript = events[completed]["transcript"]
    assert all(word in words(transcript) for word in full), transcript
    done = events[-1]["response"]
    assert done["status"] in ("completed", "incomplete") and done["output"], done
    stored = httpx.get(server.url(f"/v1/sessions/{session_id}/messages"), timeout=10).json()["data"]
    assert [m["role"] for m in stored] == ["user", "assistant"], stored
    assert stored[0]["content"][0]["transcript"] == transcript
    assert stored[1]["id"] == done["output"][0]["id"]
    assert stored[1]["content"][0]["text"] == done["output"][0]["content"][0]["text"]


async def test_a_pause_mid_sentence_gets_no_reply_and_no_half_message(server, clips):
    """I would like to order... a pizza with olives: the words at the pause do not end a
    sentence, so the short wait (200 ms, less than the pause) does not apply and no early reply
    starts; the turn goes on to the whole sentence."""
    async with websockets.connect(server.ws_url + "/v1/realtime", max_size=None) as ws:
        session_id = await open_session(ws, silence_ms=3000, eager_ms=200)
        before = early_counts(server)
        await send_real_time(ws, np.concatenate([np.zeros(SAMPLE_RATE // 4), clips["order"]]))
        await send_real_time(ws, np.zeros(int(2.0 * SAMPLE_RATE), np.float32))  # the pause
        await send_real_time(ws, clips["pizza"])
        await ws.send(float_to_pcm16(np.zeros(int(3.5 * SAMPLE_RATE), np.float32)))
        events = await events_until_done(ws)
    assert_one_turn(server, session_id, events, ["order", "pizza", "olives"])
    # An early reply begun at the mid-sentence pause (the transcript there may read as a finished
    # sentence) is dropped; at most one is used: the whole sentence's, begun at the final pause.
    after = early_counts(server)
    started, committed = (after[k] - before[k] for k in ("started", "committed"))
    assert committed <= 1 and started == committed + after["dropped"] - before["dropped"]


async def test_speech_resuming_after_a_finished_sentence_drops_the_early_reply(server, clips):
    """What time do you open? ... On Sundays.: the pause after the question starts the reply
    early (the server says so); the user goes on, so it is dropped: nothing of it reaches the
    client or the store, and the whole utterance is answered once."""
    async with websockets.connect(server.ws_url + "/v1/realtime", max_size=None) as ws:
        session_id = await open_session(ws, silence_ms=9000, eager_ms=8000)
        before = early_counts(server)
        await send_real_time(ws, np.concatenate([np.zeros(SAMPLE_RATE // 4), clips["question"]]))
        await silence_until(ws, lambda: early_counts(server)["started"] > before["started"], 7.0)
        await send_real_time(ws, clips["sundays"])
        await ws.send(float_to_pcm16(np.zeros(int(9.5 * SAMPLE_RATE), np.float32)))
        events = await events_until_done(ws)
    assert_one_turn(server, session_id, events, ["time", "open", "sundays"])
    after = early_counts(server)
    assert after["dropped"] >= before["dropped"] + 1
    assert after["committed"] == before["committed"]
