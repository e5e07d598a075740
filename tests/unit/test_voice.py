"""The voice pipeline on fakes: a VAD driven by the audio's loudness, a speech-to-text model whose
transcript grows with the loud audio it hears, a text-to-speech model of fixed-length tones. The
fakes subclass the real ports, so the ports' own timeout and error mapping run as in production."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from assistant.errors import InvalidRequestError
from assistant.ports import SAMPLE_RATE, Transcript
from assistant.testing.speech import SENTENCE, FakeSTT, FakeTTS, FakeVAD
from assistant.voice.audio import float_to_pcm16
from assistant.voice.pipeline import (
    BufferCleared,
    BufferCommitted,
    SpeechBegan,
    SpeechEnded,
    TranscriptCompleted,
    TranscriptDelta,
    VoiceConfig,
    VoicePipeline,
)
from assistant.voice.spoken_reply import SentenceSplitter, SpokenReply
from assistant.voice.streaming_transcript import SampleBuffer, Utterance, agreed_delta
from assistant.voice.turn_detection import TurnDetectionConfig
from tests.support.audio import chunks, silence, tone
from tests.support.waiting import wait_for_async

# -- helpers ----------------------------------------------------------------------------------------


class Collector:
    """The pipeline's sink: the events it was handed, in order."""

    def __init__(self) -> None:
        self.events: list[object] = []

    async def __call__(self, event: object) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


def pipeline(stt=None, config=None, **kw):
    sink = Collector()
    voice = VoicePipeline(stt or FakeSTT(), FakeVAD().stream(), config or VoiceConfig(**kw), sink)
    return voice, sink


class Decodes:
    """The background decodes (partials and final candidates) ``voice`` starts from now on, each
    recorded as it starts: a hook on its transcriber's ``schedule``."""

    def __init__(self, voice: VoicePipeline) -> None:
        self.started: list[asyncio.Task] = []
        schedule = voice.transcriber.schedule

        def recording(utterance: Utterance) -> None:
            schedule(utterance)
            if utterance.task is not None and utterance.task not in self.started:
                self.started.append(utterance.task)

        voice.transcriber.schedule = recording

    async def finished(self) -> None:
        """Wait until every decode started so far, and any those start in turn, has finished."""
        while pending := [task for task in self.started if not task.done()]:
            await asyncio.gather(*pending)


# -- server VAD -------------------------------------------------------------------------------------


#: One silence wait for every turn (no adaptive end of turn): the times below are exact.
FIXED_WAIT = TurnDetectionConfig(eager_silence_ms=None)


async def test_speech_then_silence_is_a_committed_turn():
    voice, sink = pipeline(turn_detection=FIXED_WAIT, early_response=False)
    for chunk in chunks(np.concatenate([silence(0.5), tone(1.0), silence(0.8)])):
        await voice.append_pcm16(chunk)
    await voice.drain()
    assert sink.kinds() == ["SpeechBegan", "SpeechEnded", "BufferCommitted", "TranscriptCompleted"]
    began, ended, committed, completed = sink.events
    assert began.item_id == ended.item_id == committed.item_id == completed.item_id
    assert 150 <= began.audio_start_ms <= 250  # 500 ms minus the 300 ms prefix padding
    assert 1950 <= ended.audio_end_ms <= 2100  # speech ends at 1.5 s, plus 500 ms of silence
    assert completed.transcript == " ".join(SENTENCE)
    assert completed.by_vad
    spoken_s = (ended.audio_end_ms - began.audio_start_ms) / 1000
    assert completed.duration_s == pytest.approx(spoken_s, abs=0.01)


@pytest.mark.parametrize("chunk_s", [0.02, 777 / SAMPLE_RATE, 0.5, 4.0])
async def test_turn_times_do_not_depend_on_the_chunk_size(chunk_s):
    audio = np.concatenate([silence(0.7), tone(0.9), silence(0.8), tone(0.6), silence(0.9)])
    voice, sink = pipeline(turn_detection=FIXED_WAIT)
    for chunk in chunks(audio, chunk_s):
        await voice.append_pcm16(chunk)
    await voice.drain()
    times = [(type(e).__name__, getattr(e, "audio_start_ms", getattr(e, "audio_end_ms", None)))
             for e in sink.events if isinstance(e, (SpeechBegan, SpeechEnded))]  # fmt: skip
    # the second turn's prefix padding stops at the first one's end
    assert times == [("SpeechBegan", 372), ("SpeechEnded", 2112),
                     ("SpeechBegan", 2112), ("SpeechEnded", 3520)]  # fmt: skip
    durations = [round(e.duration_s, 3) for e in sink.of(TranscriptCompleted)]
    assert durations == [1.74, 1.408]


async def test_the_decode_made_while_silence_settles_is_the_final_transcript():
    stt = FakeSTT()
    voice, sink = pipeline(stt)
    decodes = Decodes(voice)
    for chunk in chunks(np.concatenate([tone(1.0), silence(0.2)])):
        await voice.append_pcm16(chunk)
    await decodes.finished()  # the speculative decode, made while the turn is not over yet
    assert len(stt.calls) == 1 and not sink.of(SpeechEnded)
    for chunk in chunks(silence(0.5)):
        await voice.append_pcm16(chunk)
    await voice.drain()
    [completed] = sink.of(TranscriptCompleted)
    assert completed.from_stream and completed.transcript == " ".join(SENTENCE)
    assert len(stt.calls) == 1  # no decode after the turn ended


async def test_speech_resuming_after_the_early_decode_is_decoded_again():
    stt = FakeSTT()
    voice, sink = pipeline(stt)
    decodes = Decodes(voice)
    for chunk in chunks(np.concatenate([tone(0.5), silence(0.2)])):
        await voice.append_pcm16(chunk)
    await decodes.finished()  # the early decode is done before the speech resumes
    assert decodes.started
    for chunk in chunks(np.concatenate([tone(0.5), silence(0.6)])):
        await voice.append_pcm16(chunk)
    await voice.drain()
    assert len(sink.of(SpeechBegan)) == 1  # one turn: the pause was shorter than 500 ms
    [completed] = sink.of(TranscriptCompleted)
    assert completed.transcript == " ".join(SENTENCE)  # the whole second of speech


async def test_partial_deltas_are_words_two_decodes_agree_on():
    # No interval between partials (a decode is due at each MIN_NEW_SAMPLES of new audio): the
    # audio comes far faster than real time here, and with an interval of 1 ms the partials
    # depended on the clock: in a warm process the whole second of tone went in within 1 ms, no
    # partial was due, the settled decode was the only one and nothing was agreed on.
    stt = FakeSTT(delay_s=0.01)
    voice, sink = pipeline(stt, partial_interval_s=0)
    decodes = Decodes(voice)
    for chunk in chunks(np.concatenate([tone(1.0), silence(0.8)])):
        await voice.append_pcm16(chunk)
        await decodes.finished()  # each partial decode finishes: several per utterance
    await voice.drain()
    assert len([seconds for seconds in stt.calls if seconds <= 1.0]) >= 2  # partials in the tone
    deltas = [d.delta for d in sink.of(TranscriptDelta)]
    final = sink.of(TranscriptCompleted)[0].transcript
    assert len(deltas) >= 2 and final.startswith("".join(deltas))
    kinds = sink.kinds()
    last_delta = len(kinds) - 1 - kinds[::-1].index("TranscriptDelta")
    assert last_delta < kinds.index("SpeechEnded")  # all of them while the user speaks


async def test_no_partial_decode_before_the_interval_has_passed():
    stt = FakeSTT(delay_s=0.01)
    voice, sink = pipeline(stt, partial_interval_s=3600)
    decodes = Decodes(voice)
    for chunk in chunks(np.concatenate([tone(1.0), silence(0.8)])):
        await voice.append_pcm16(chunk)
        await decodes.finished()
    await voice.drain()
    assert len(stt.calls) == 1  # only the decode made once the voice went quiet: the final one
    assert not sink.of(TranscriptDelta)
    [completed] = sink.of(TranscriptCompleted)
    assert completed.from_stream and completed.transcript == " ".join(SENTENCE)


async def test_two_turns_in_one_stream_keep_their_order():
    voice, sink = pipeline(FakeSTT(delay_s=0.02))
    audio = np.concatenate([tone(0.5), silence(0.7), tone(1.0), silence(0.7)])
    for chunk in chunks(audio):
        await voice.append_pcm16(chunk)
    await voice.drain()
    first, second = sink.of(TranscriptCompleted)
    assert first.item_id != second.item_id
    assert len(first.transcript.split()) < len(second.transcript.split())


async def test_a_blip_is_not_a_turn():
    voice, sink = pipeline()
    for chunk in chunks(np.concatenate([tone(0.06), silence(1.0)])):
        await voice.append_pcm16(chunk)
    assert sink.events == []
    assert len(voice.buffer) < 0.6 * SAMPLE_RATE  # idle: only a prefix padding is kept


async def test_commit_by_hand_mid_speech_and_when_nothing_was_said():
    voice, sink = pipeline()
    with pytest.raises(InvalidRequestError) as info:
        await voice.commit()
    assert info.value.code == "input_audio_buffer_commit_empty"
    for chunk in chunks(tone(0.6)):
        await voice.append_pcm16(chunk)
    await voice.commit()
    await voice.drain()
    assert sink.kinds() == ["SpeechBegan", "SpeechEnded", "BufferCommitted", "TranscriptCompleted"]
    assert not sink.of(TranscriptCompleted)[0].by_vad


async def test_max_turn_length_commits_a_vad_turn():
    voice, sink = pipeline(max_turn_s=1.0)
    voice.configure(voice.config.with_turn_detection(TurnDetectionConfig()))
    for chunk in chunks(tone(1.6)):
        await voice.append_pcm16(chunk)
    await voice.drain()
    assert len(sink.of(SpeechEnded)) >= 1
    assert sink.of(TranscriptCompleted)[0].duration_s <= 1.05


async def test_clear_drops_the_turn():
    voice, sink = pipeline()
    for chunk in chunks(tone(0.6)):
        await voice.append_pcm16(chunk)
    await voice.clear()
    for chunk in chunks(silence(0.8)):
        await voice.append_pcm16(chunk)
    await voice.drain()
    assert sink.kinds() == ["SpeechBegan", "BufferCleared"]
    assert len(voice.buffer) < 0.6 * SAMPLE_RATE


# -- manual turns and limits ------------------------------------------------------------------------


async def test_manual_mode_commits_the_whole_buffer():
    voice, sink = pipeline(turn_detection=None)
    for chunk in chunks(np.concatenate([tone(0.5), silence(1.0)])):
        await voice.append_pcm16(chunk)
    assert sink.events == []
    await voice.commit()
    await voice.drain()
    assert sink.kinds() == ["BufferCommitted", "TranscriptCompleted"]
    completed = sink.of(TranscriptCompleted)[0]
    assert completed.duration_s == pytest.approx(1.5, abs=0.01) and not completed.by_vad
    with pytest.raises(InvalidRequestError) as info:
        await voice.commit()
    assert info.value.code == "input_audio_buffer_commit_empty"


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"\x00\x01\x02", "invalid_audio_bytes"), (b"\x00" * 4096, "audio_too_large")],
)
async def test_bad_chunks_are_refused_and_the_buffer_is_unchanged(data, code):
    voice, _ = pipeline(turn_detection=None, max_chunk_bytes=2048)
    await voice.append_pcm16(float_to_pcm16(tone(0.05)))
    with pytest.raises(InvalidRequestError) as info:
        await voice.append_pcm16(data)
    assert info.value.code == code
    assert len(voice.buffer) == int(0.05 * SAMPLE_RATE)


async def test_a_manual_buffer_stops_at_the_turn_limit():
    voice, _ = pipeline(turn_detection=None, max_turn_s=0.5)
    for chunk in chunks(tone(0.5)):
        await voice.append_pcm16(chunk)
    with pytest.raises(InvalidRequestError) as info:
        await voice.append_pcm16(float_to_pcm16(tone(0.1)))
    assert info.value.code == "audio_too_long"
    assert len(voice.buffer) == int(0.5 * SAMPLE_RATE)


async def test_a_failing_model_reports_the_turn_as_failed():
    class Broken(FakeSTT):
        def _transcribe_impl(self, audio, language, prompt):
            raise RuntimeError("out of memory")

    from assistant.voice.pipeline import TranscriptFailed

    voice, sink = pipeline(Broken(), turn_detection=None)
    await voice.append_pcm16(float_to_pcm16(tone(0.5)))
    await voice.commit()
    await voice.drain()
    [failed] = sink.of(TranscriptFailed)
    assert failed.error.code == "model_error"


# -- pieces -----------------------------------------------------------------------------------------


def test_agreement_sends_only_stable_words_once():
    utterance = Utterance(start=0)
    assert agreed_delta(utterance, "what is") == ""  # nothing to agree with yet
    assert agreed_delta(utterance, "what is the") == "what is"
    assert agreed_delta(utterance, "What is the weather.") == " the"
    assert agreed_delta(utterance, "what was the weather") == ""  # a revision is not sent
    assert agreed_delta(utterance, "what is the weather like") == ""  # differs from the last
    assert agreed_delta(utterance, "what is the weather like today") == " weather like"
    assert utterance.emitted == ["what", "is", "the", "weather", "like"]


def test_sample_buffer_addresses_absolute_positions():
    buffer = SampleBuffer()
    buffer.append(np.arange(10, dtype=np.float32))
    buffer.append(np.arange(10, 20, dtype=np.float32))
    buffer.drop_before(5)
    assert (buffer.start, buffer.end, len(buffer)) == (5, 20, 15)
    np.testing.assert_array_equal(buffer.slice(8, 12), [8, 9, 10, 11])
    np.testing.assert_array_equal(buffer.slice(0, 7), [5, 6])  # clipped to what is held
    buffer.clear()
    assert len(buffer) == 0 and buffer.slice(0, 30).shape == (0,)


def test_sentences_are_cut_at_their_ends():
    splitter = SentenceSplitter(max_chars=40)
    out = []
    for delta in ["Hello", " there.", " How are", " you? I am", " fine", "\nThanks"]:
        out += splitter.feed(delta)
    assert out == ["Hello there.", "How are you?", "I am fine"]
    assert splitter.flush() == ["Thanks"]
    long = "word, " * 5 + "and more words without any end in sight at all"
    assert all(len(s) <= 40 for s in splitter.feed(long))


async def test_a_spoken_reply_speaks_sentence_by_sentence():
    tts = FakeTTS(per_char_s=0.01)
    pieces: list[np.ndarray] = []
    spoken = SpokenReply(tts, pieces.append, chunk_s=0.05)
    for delta in "The capital of France is Paris. It is big".split(" "):
        spoken.feed(delta + " ")
    await wait_for_async(lambda: pieces, what="the first sentence's audio")
    assert tts.spoken == ["The capital of France is Paris."]  # spoken before the reply ended
    await spoken.finish()
    assert tts.spoken == ["The capital of France is Paris.", "It is big"]
    assert all(p.shape[0] <= 800 for p in pieces)
    assert spoken.samples == sum(p.shape[0] for p in pieces) == int(31 * 160) + int(9 * 160)


async def test_a_stopped_spoken_reply_says_no_more():
    tts = FakeTTS()
    spoken = SpokenReply(tts, lambda _: None)
    spoken.stop()
    spoken.feed("One sentence. Two sentences. ")
    await spoken.cancel()
    assert tts.spoken == []


def test_config_from_settings():
    from assistant.config import VoiceSettings

    config = VoiceConfig.from_settings(VoiceSettings(silence_duration_ms=800, max_turn_s=30))
    assert config.turn_detection.silence_duration_ms == 800
    assert config.turn_detection.max_speech_ms == 30_000
    assert VoiceConfig.from_settings(VoiceSettings(turn_detection=False)).turn_detection is None


def test_events_are_plain_data():
    assert BufferCleared() == BufferCleared()
    assert BufferCommitted("msg_1") == BufferCommitted("msg_1")


async def test_a_long_sentence_hands_its_audio_on_chunk_by_chunk_with_the_loop_running_between():
    """Each chunk is emitted in its own loop step, so the connection's sender writes it before
    the next: a burst of chunks never piles up in a healthy client's send queue."""
    tts = FakeTTS(per_char_s=0.01)
    steps: list[int] = []
    ticks = [0]

    async def ticker() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    running = asyncio.create_task(ticker())
    spoken = SpokenReply(tts, lambda _: steps.append(ticks[0]), chunk_s=0.01)
    spoken.feed("A sentence long enough to make many chunks of audio. ")
    await spoken.finish()
    running.cancel()
    assert len(steps) > 10
    assert all(later > earlier for earlier, later in zip(steps, steps[1:]))


async def test_the_port_hands_adapters_contiguous_float32_mono_and_refuses_stereo():
    from assistant.errors import ModelError

    seen: list[np.ndarray] = []

    class Recording(FakeSTT):
        def _transcribe_impl(self, audio, language, prompt) -> Transcript:
            seen.append(audio)
            return super()._transcribe_impl(audio, language, prompt)

    stt = Recording(text="hi")
    strided = np.zeros(3200, dtype=np.float64)[::2]  # float64, not contiguous
    assert (await stt.transcribe(strided)).text == "hi"
    assert seen[0].dtype == np.float32 and seen[0].flags["C_CONTIGUOUS"] and seen[0].shape == (1600,)
    with pytest.raises(ModelError, match="ValueError") as refused:
        await stt.transcribe(np.zeros((2, 1600), dtype=np.float32))
    assert "audio must be mono" in str(refused.value.__cause__)
    assert len(seen) == 1  # the adapter never saw the stereo audio
