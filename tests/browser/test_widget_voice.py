"""The mic end to end in real Chromium: its fake capture device plays a WAV of real speech
(espeak-ng) into the widget's AudioWorklet, which streams PCM16 16 kHz to the server; the real
Silero VAD ends the turn, the real Whisper tiny.en transcribes it (partials shown live), the
scripted model answers and espeak-ng speaks the answer, which the widget plays; speaking over it
stops it (barge-in)."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from playwright.sync_api import expect

from assistant.voice.audio import float_to_pcm16
from tests.support.audio import read_wav, require_speech_tools, silence, speak, words
from tests.support.browser import shot

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# One sentence: a pause after a finished one ("Hello there.") may end the turn early (the adaptive
# end of turn), which is not what this test is about.
SENTENCE = "What is the weather like in Paris today, and should I take an umbrella?"


@pytest.fixture(scope="module")
def browser_args(tmp_path_factory):
    """Chromium's fake mic plays half a second of silence, the sentence, then silence (once per
    capture: a new capture starts the file again)."""
    require_speech_tools()
    folder = tmp_path_factory.mktemp("mic")
    speech = read_wav(speak(SENTENCE, folder, "sentence"))
    audio = np.concatenate([silence(0.5), speech, silence(4.0)])
    path = folder / "mic.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(float_to_pcm16(audio))
    return (
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={path}%noloop",
    )  # fmt: skip


@pytest.fixture
def context(browser):
    context = browser.new_context(permissions=["microphone"], viewport={"width": 1280, "height": 800})
    try:
        yield context
    finally:
        context.close()


def test_the_mic_streams_speech_and_the_spoken_reply_plays(scripted_server, widget):
    widget.goto(scripted_server.url("/"))
    widget.open()
    widget.watch()
    widget.page.locator(".mic").click()
    expect(widget.page.locator(".mic")).to_have_attribute("aria-pressed", "true")
    [reply] = widget.wait_replies(1)
    widget.wait("() => AssistantWidget.status().audio.playedS > 0")  # its sound came out

    heard = widget.page.locator(".msg.user").last.inner_text()
    assert {"weather", "paris", "umbrella"} <= set(words(heard)), heard
    assert words(reply) == words("You said: " + heard)
    partials = [text for text in widget.watched()["partials"] if text != "Listening…"]
    assert partials and all(len(text) < len(heard) for text in partials), partials  # shown live
    sent = widget.record.frames_sent
    assert any(isinstance(frame, bytes) for frame in sent)  # the audio: binary PCM16 frames
    assert all(len(frame) == 3200 for frame in sent if isinstance(frame, bytes))  # 100 ms each
    assert widget.record.events_sent("session.update")[0]["session"]["modalities"] == ["text", "audio"]
    widget.wait("() => !AssistantWidget.status().audio.playing")
    audio = widget.status()["audio"]
    assert audio["chunks"] >= 2 and audio["gaps"] == 0  # one after another, no gap between
    assert audio["playedS"] == pytest.approx(audio["scheduledS"])
    shot(widget.page, "voice-answered")

    widget.page.locator(".mic").click()
    expect(widget.page.locator(".mic")).to_have_attribute("aria-pressed", "false")
    assert widget.record.errors == []


def test_speaking_over_the_spoken_reply_stops_it(scripted_server, widget):
    widget.goto(scripted_server.url("/"))
    widget.open()
    mic = widget.page.locator(".mic")
    mic.click()
    widget.wait("() => AssistantWidget.status().audio.playing", timeout_s=90)
    mic.click()
    expect(mic).to_have_attribute("aria-pressed", "false")
    mic.click()  # a new capture: the speech starts again, over the reply that is playing
    widget.wait("() => AssistantWidget.status().audio.interrupted === 1", timeout_s=90)
    cut = widget.status()["audio"]
    assert cut["cutS"] > 0  # the rest of the first reply's sound was dropped
    assert cut["playedS"] < cut["scheduledS"]
    replies = widget.wait_replies(2, timeout_s=90)  # the second turn is answered too
    assert "umbrella" in words(replies[-1])
    mic.click()
