"""A voice call handed to a person, on real speech (espeak-ng questions, the real Whisper tiny.en
and Silero VAD, espeak-ng as the reply voice) through the real app in process with a scripted
model and the in-memory store: while an agent holds the conversation the caller keeps talking,
each spoken turn is stored and reaches the agent (not answered by the bot), and the agent's typed
replies are spoken to the caller with the TTS voice (``response.output_audio.*`` for the agent's
item: the audio transcribes back to the agent's words); handed back, the bot answers the next
spoken turn again."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from assistant.voice.audio import pcm16_to_float
from tests.integration.test_voice_e2e import client_for, has_words, models, stream  # noqa: F401
from tests.support.audio import read_wav, require_speech_tools, speak, with_silence, words
from tests.support.ws import until

pytestmark = pytest.mark.integration

CALLER = ("My parcel never arrived at my house.", ["parcel", "never", "arrived"])
AGENT = "Your parcel will arrive tomorrow morning."


@pytest.fixture(scope="module")
def caller(tmp_path_factory):
    require_speech_tools()
    return speak(CALLER[0], tmp_path_factory.mktemp("handoff-voice"), "caller")


def test_an_agent_talks_to_a_caller_through_the_tts_voice(caller, models, client_for):  # noqa: F811
    client = client_for(**models)
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        ws.send_json({"type": "session.update", "session": {"modalities": ["text", "audio"]}})
        until(ws, "session.updated")
        base = f"/v1/conversations/{session_id}"
        assert client.post(f"{base}/handoff", json={"reason": "api"}).json()["status"] == (
            "waiting_human"
        )
        claimed = client.post(f"{base}/claim").json()
        assert claimed["status"] == "human"
        until(ws, "conversation.status.updated")  # waiting_human
        assert until(ws, "conversation.status.updated")[-1]["status"] == "human"

        # the caller speaks: stored, on the stream, not answered by the bot
        stream(ws, with_silence(read_wav(caller)))
        heard = until(ws, "conversation.item.created")
        transcript = [e for e in heard if e["type"].endswith("transcription.completed")][-1]
        assert has_words(transcript["transcript"], CALLER[1]), transcript
        history = client.get(base).json()["messages"]
        assert history[-1]["content"][0]["transcript"] == transcript["transcript"]

        # the agent types; the caller gets the item and hears it
        posted = client.post(f"{base}/messages", json={"text": AGENT})
        assert posted.status_code == 201, posted.text
        agent_item = posted.json()["item"]
        events = until(ws, "response.output_audio.done")
        kinds = [e["type"] for e in events]
        assert "response.created" not in kinds and "response.output_text.delta" not in kinds
        added = [e for e in events if e["type"] == "conversation.item.added"]
        assert [e["item"]["id"] for e in added] == [agent_item["id"]]
        audio = [e for e in events if e["type"] == "response.output_audio.delta"]
        assert audio and {e["item_id"] for e in audio} == {agent_item["id"]}
        assert events[-1]["item_id"] == agent_item["id"]
        pcm = b"".join(base64.b64decode(e["delta"]) for e in audio)
        spoken = pcm16_to_float(pcm)
        assert spoken.shape[0] > 16_000 and float(np.abs(spoken).max()) > 0.05
        heard_back = client.portal.call(models["stt"].transcribe, spoken)
        assert has_words(heard_back.text, ["parcel", "arrive", "tomorrow"]), heard_back.text

        # handed back: the bot answers the caller's next spoken turn
        assert client.post(f"{base}/handback").json()["status"] == "bot"
        assert until(ws, "conversation.status.updated")[-1]["status"] == "bot"
        stream(ws, with_silence(read_wav(caller)))
        answered = until(ws, "response.done")
        reply = answered[-1]["response"]["output"][0]["content"][0]["text"]
        assert reply.startswith("You said:") and words(reply)[2:]
