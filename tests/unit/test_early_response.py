"""Sub-second voice turns: the end-of-turn guess on the streaming transcript, the adaptive
silence wait it drives (detector and pipeline), and the early reply's commit / drop logic (the
speculation on the real orchestrator and a connection's ``VoiceSession`` + ``Responses``), on the
fakes of ``assistant.testing``: a scripted model, the in-memory store, the loudness VAD, the
counting speech-to-text model."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from assistant.config import LLMSettings, MemorySettings, PromptSettings
from assistant.messages import AudioPart, Message
from assistant.orchestrator import Orchestrator
from assistant.server.metrics import Metrics
from assistant.server.outbox import Outbox
from assistant.server.responses import Responses
from assistant.server.voice_session import VoiceSession
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from assistant.testing.speech import FakeSTT, FakeVAD
from assistant.voice.end_of_turn import end_of_turn
from assistant.voice.pipeline import (
    SpeechBegan,
    SpeechEnded,
    TranscriptCompleted,
    TurnPaused,
    TurnResumed,
    VoiceConfig,
    VoicePipeline,
)
from assistant.voice.speculation import Speculation
from assistant.voice.turn_detection import SpeechStopped, TurnDetectionConfig, TurnDetector
from tests.support.audio import chunks, silence, tone
from tests.support.waiting import wait_for_async

# -- the end-of-turn guess --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "transcript",
    [
        "What time do you open?",
        "What time do you open",  # a question word first: finished even without its "?"
        "Turn on the kitchen lights and play some music",  # Whisper tiny left out the period
        "Turn the lights on.",  # a particle, not a preposition
        "I would like to order a pizza with olives.",
        "Thanks, that's all!",
        "What are you looking for?",  # a question ends where it ends, whatever its last word
        "Can I get a coffee?",
    ],
)
def test_finished_sentences_get_the_short_wait(transcript):
    assert end_of_turn(transcript).finished, end_of_turn(transcript)


@pytest.mark.parametrize(
    ("transcript", "reason"),
    [
        ("I'd like to order a", "ends with 'a'"),
        ("I'd like to order a.", "ends with 'a'"),  # Whisper's period after a half sentence
        ("I would like to order.", "'to order' wants an object"),
        ("I would like to order...", "trails off"),
        ("I want to book", "'to book' wants an object"),
        ("I would like", "ends with 'like'"),
        ("I need", "an intent without its object"),
        ("Can you tell me about the", "ends with 'the'"),
        ("My order number is", "ends with 'is'"),
        ("I need help with my", "ends with 'my'"),
        ("Well, um", "ends with 'um'"),
        ("Pizza, pasta,", "trails off"),
        ("", "no words"),
        ("  ...  ", "no words"),
    ],
)
def test_half_sentences_keep_the_long_wait(transcript, reason):
    guess = end_of_turn(transcript)
    assert (guess.verdict, guess.reason) == ("unfinished", reason)


# -- the adaptive silence wait ------------------------------------------------------------------


def _feed(detector: TurnDetector, probs: list[float]) -> list:
    width = detector.config.window_samples
    events = []
    for prob in probs:
        events += detector.feed([prob], np.zeros(width, np.float32))
    return events


def test_a_hurried_silence_ends_after_the_eager_wait():
    config = TurnDetectionConfig(silence_duration_ms=512, eager_silence_ms=128, min_speech_ms=64)
    detector = TurnDetector(config)  # 32 ms windows: 16 of silence end a turn, 4 a hurried one
    _feed(detector, [0.9] * 10 + [0.0] * 2)
    assert detector.in_speech
    detector.hurry()
    assert detector.silence_ms == 64
    (stopped,) = _feed(detector, [0.0] * 2)
    assert isinstance(stopped, SpeechStopped) and stopped.reason == "silence"
    assert stopped.audio_end_ms == (10 + 4) * 32  # 10 voiced windows and 4 silent


def test_speech_takes_the_hurry_back():
    config = TurnDetectionConfig(silence_duration_ms=512, eager_silence_ms=128, min_speech_ms=64)
    detector = TurnDetector(config)
    _feed(detector, [0.9] * 10 + [0.0] * 2)
    detector.hurry()
    assert _feed(detector, [0.9] + [0.0] * 8) == []  # past 4 silent windows, not yet 16
    (stopped,) = _feed(detector, [0.0] * 8)
    assert stopped.audio_end_ms == (10 + 2 + 1 + 16) * 32


def test_without_an_eager_wait_hurry_changes_nothing():
    detector = TurnDetector(TurnDetectionConfig(silence_duration_ms=512, eager_silence_ms=None))
    _feed(detector, [0.9] * 10 + [0.0] * 2)
    detector.hurry()
    assert _feed(detector, [0.0] * 13) == []
    assert len(_feed(detector, [0.0])) == 1
    with pytest.raises(ValueError):
        TurnDetectionConfig(eager_silence_ms=-1)


# -- the pipeline: pauses, resumes and the wait they choose ---------------------------------------


class Collector:
    def __init__(self) -> None:
        self.events: list[object] = []

    async def __call__(self, event: object) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


async def _spoken(voice: VoicePipeline, audio: np.ndarray) -> None:
    """Append ``audio`` in 32 ms chunks, letting every decode started finish before the next
    chunk (a decode that keeps up with the speech, as Whisper does at real time)."""
    for chunk in chunks(audio, 512 / 16_000):
        await voice.append_pcm16(chunk)
        while (task := voice._utterance.task if voice._utterance else None) is not None:
            await asyncio.gather(task, return_exceptions=True)


def _pipeline(text: str, **config) -> tuple[VoicePipeline, Collector]:
    sink = Collector()
    detection = TurnDetectionConfig(silence_duration_ms=800, eager_silence_ms=200)
    voice_config = VoiceConfig(turn_detection=detection, **config)
    return VoicePipeline(FakeSTT(text=text), FakeVAD().stream(), voice_config, sink), sink


async def test_a_finished_sentence_pauses_and_ends_after_the_short_wait():
    voice, sink = _pipeline("What time do you open?")
    await _spoken(voice, np.concatenate([silence(0.3), tone(1.0), silence(1.0)]))
    await voice.drain()
    assert sink.kinds()[:3] == ["SpeechBegan", "TurnPaused", "SpeechEnded"]
    paused = sink.events[1]
    assert paused.transcript == "What time do you open?"
    ended = sink.events[2]
    assert 1300 + 200 <= ended.audio_end_ms <= 1300 + 200 + 64  # the eager wait, not 800 ms


async def test_a_half_sentence_waits_the_long_silence_and_sends_no_pause():
    voice, sink = _pipeline("I'd like to order a")
    await _spoken(voice, np.concatenate([silence(0.3), tone(1.0), silence(1.0)]))
    await voice.drain()
    assert "TurnPaused" not in sink.kinds()
    (ended,) = [e for e in sink.events if isinstance(e, SpeechEnded)]
    assert 1300 + 800 <= ended.audio_end_ms <= 1300 + 800 + 64


async def test_speech_after_a_pause_resumes_the_turn():
    voice, sink = _pipeline("What time do you open?")
    audio = [silence(0.3), tone(0.6), silence(0.12), tone(0.6), silence(1.0)]
    await _spoken(voice, np.concatenate(audio))
    await voice.drain()
    kinds = [kind for kind in sink.kinds() if kind != "TranscriptDelta"]
    assert kinds[:4] == ["SpeechBegan", "TurnPaused", "TurnResumed", "TurnPaused"], kinds
    assert kinds.count("SpeechEnded") == 1 and kinds.count("TranscriptCompleted") == 1


async def test_early_response_off_still_adapts_the_wait_but_sends_no_pause():
    voice, sink = _pipeline("What time do you open?", early_response=False)
    await _spoken(voice, np.concatenate([silence(0.3), tone(1.0), silence(1.0)]))
    await voice.drain()
    assert "TurnPaused" not in sink.kinds()
    (ended,) = [e for e in sink.events if isinstance(e, SpeechEnded)]
    assert ended.audio_end_ms <= 1300 + 200 + 64


# -- the speculation on the orchestrator ----------------------------------------------------------


def _orchestrator(llm: ScriptedLM) -> tuple[Orchestrator, MemoryStore]:
    store = MemoryStore()
    orchestrator = Orchestrator(
        llm, store, llm_settings=LLMSettings(), prompt_settings=PromptSettings(instructions="hi"),
        memory_settings=MemorySettings(lock_wait_s=0.05),
    )  # fmt: skip
    return orchestrator, store


def _user(text: str, item_id: str = "msg_turn") -> Message:
    return Message(id=item_id, role="user", content=(AudioPart(transcript=text),))


async def test_a_reply_generated_before_the_turn_ends_is_stored_only_once_committed():
    llm = ScriptedLM()
    orchestrator, store = _orchestrator(llm)
    session = await orchestrator.open_session()
    lease = orchestrator.new_lease(session.id)
    speculation = Speculation(orchestrator, lease, _user("What time do you open?")).start()
    await wait_for_async(lambda: speculation.buffered == 7, what="the whole reply buffered")
    assert store.messages.get(session.id, []) == []  # nothing stored, not even the user turn
    await orchestrator.add_item(session.id, _user("What time do you open?"), lease)
    assert speculation.matches_store()
    speculation.commit()
    deltas = [d async for d in speculation.deltas()]
    assert "".join(deltas) == "You said: What time do you open?"
    assert [(m.role, m.text) for m in store.messages[session.id]] == [
        ("user", "What time do you open?"), ("assistant", "You said: What time do you open?")]  # fmt: skip
    assert speculation.run.status == "completed" and len(llm.prompts) == 1


async def test_a_dropped_speculation_sends_and_stores_nothing_and_stops_the_model():
    llm = ScriptedLM(" ".join(f"w{i}" for i in range(200)), token_delay_s=0.005)
    orchestrator, store = _orchestrator(llm)
    session = await orchestrator.open_session()
    speculation = Speculation(
        orchestrator, orchestrator.new_lease(session.id), _user("Hi.")
    ).start()
    await wait_for_async(lambda: speculation.buffered >= 3, what="some deltas buffered")
    speculation.drop()
    await speculation.wait()
    assert store.messages.get(session.id, []) == []
    assert speculation.run.status == "cancelled" and speculation.run.message is None
    assert speculation.run.usage.output_tokens < 200
    with pytest.raises(RuntimeError):
        speculation.commit()


async def test_another_writer_in_between_does_not_match():
    orchestrator, _ = _orchestrator(ScriptedLM())
    session = await orchestrator.open_session()
    lease = orchestrator.new_lease(session.id)
    speculation = Speculation(orchestrator, lease, _user("Hi.")).start()
    await wait_for_async(lambda: speculation.lease.history_ids is not None, what="history read")
    await orchestrator.add_item(session.id, Message.from_text("user", "typed elsewhere"))
    await orchestrator.add_item(session.id, _user("Hi."), lease)
    assert not speculation.matches_store()
    speculation.drop()
    await speculation.wait()


# -- a connection: VoiceSession + Responses -------------------------------------------------------


class Connection:
    """A connection's voice side over the real orchestrator, the scripted model and the in-memory
    store; ``sent`` are the event types queued for the client."""

    def __init__(self, llm: ScriptedLM) -> None:
        self.llm = llm
        self.orchestrator, self.store = _orchestrator(llm)
        self.metrics = Metrics()
        self.outbox = Outbox(None, None, self.metrics, limit=100_000)  # type: ignore[arg-type]

    async def open(self) -> Connection:
        self.session = await self.orchestrator.open_session()
        self.lease = self.orchestrator.new_lease(self.session.id)
        self.responses = Responses(self.orchestrator, self.session.id, self.lease, self.outbox,
                                   self.metrics)  # fmt: skip

        async def add(message: Message):
            return await self.orchestrator.add_item(self.session.id, message, self.lease)

        self.voice = VoiceSession(None, self.outbox, self.responses, add, self.metrics)
        return self

    def sent(self) -> list[str]:
        events = list(self.outbox._events)
        return [json.loads(e)["type"] if isinstance(e, str) else e.type for e in events]

    def stored(self) -> list[tuple[str, str]]:
        return [(m.role, m.text) for m in self.store.messages.get(self.session.id, [])]

    def early(self, outcome: str) -> int:
        return self.metrics._counts.early[outcome]

    async def event(self, event: object) -> None:
        await self.voice._on_event(event)  # the pipeline's sink

    async def done(self) -> None:
        await self.responses.wait()
        await self.voice.aclose()


def _completed(text: str, item_id: str = "msg_turn") -> TranscriptCompleted:
    return TranscriptCompleted(item_id, text, 1.5, by_vad=True, from_stream=True)


async def test_the_early_reply_is_sent_once_the_turn_ends_with_its_transcript():
    conn = await Connection(ScriptedLM()).open()
    await conn.event(TurnPaused("msg_turn", "What time do you open?"))
    await wait_for_async(lambda: conn.voice._early.buffered == 7, what="the reply buffered")
    assert conn.sent() == [] and conn.stored() == []
    await conn.event(_completed("What time do you open?"))
    await conn.done()
    sent = conn.sent()
    assert sent[:3] == [
        "conversation.item.input_audio_transcription.completed", "conversation.item.created",
        "response.created"]  # fmt: skip
    assert sent.count("response.output_text.delta") == 7 and sent[-1] == "response.done"
    assert conn.stored() == [("user", "What time do you open?"),
                             ("assistant", "You said: What time do you open?")]  # fmt: skip
    assert len(conn.llm.prompts) == 1  # the turn was answered by the early reply
    assert (conn.early("started"), conn.early("committed"), conn.early("dropped")) == (1, 1, 0)


async def test_speech_resuming_drops_the_early_reply_without_a_trace():
    conn = await Connection(ScriptedLM(token_delay_s=0.005)).open()
    await conn.event(TurnPaused("msg_turn", "I would like to order."))
    await wait_for_async(lambda: conn.voice._early.buffered >= 2, what="some deltas buffered")
    await conn.event(TurnResumed("msg_turn"))
    assert conn.voice._early is None and conn.early("dropped") == 1
    await asyncio.gather(*[s.wait() for s in list(conn.voice._dropped)])
    assert conn.sent() == [] and conn.stored() == []  # no half message, no reply
    await conn.event(_completed("I would like to order a pizza with olives."))
    await conn.done()
    assert conn.sent().count("response.created") == 1
    assert conn.stored() == [("user", "I would like to order a pizza with olives."),
                             ("assistant", "You said: I would like to order a pizza with olives.")]  # fmt: skip
    assert conn.early("committed") == 0


async def test_a_final_transcript_other_than_the_paused_one_is_answered_afresh():
    conn = await Connection(ScriptedLM()).open()
    await conn.event(TurnPaused("msg_turn", "What time do you open?"))
    await conn.event(_completed("What time do you open on Sundays?"))
    await conn.done()
    assert conn.stored() == [("user", "What time do you open on Sundays?"),
                             ("assistant", "You said: What time do you open on Sundays?")]  # fmt: skip
    assert conn.sent().count("response.created") == 1
    assert (conn.early("committed"), conn.early("dropped")) == (0, 1)


async def test_barge_in_cuts_an_adopted_early_reply():
    conn = await Connection(ScriptedLM(" ".join(["w"] * 300), token_delay_s=0.005)).open()
    await conn.event(TurnPaused("msg_turn", "Tell me a story."))
    await conn.event(_completed("Tell me a story."))
    await wait_for_async(lambda: conn.responses.running is not None, what="the reply adopted")
    await wait_for_async(lambda: "response.output_text.delta" in conn.sent(), what="a delta")
    await conn.event(SpeechBegan("msg_next", 0))
    await conn.done()
    (user, reply) = conn.store.messages[conn.session.id]
    assert reply.status == "interrupted" and 0 < len(reply.text.split()) < 300
    assert conn.sent()[-1] == "response.done"
