"""End of speech -> final transcript: streaming transcription against transcribing after the end.

The same spoken utterances (sentences spoken by espeak-ng, 0.3 s of silence before, 1.2 s after)
go through two paths, one after the other so they never share the CPU:

- **streaming** (ours): the utterance is fed in 40 ms chunks *at real time* to a ``VoicePipeline``
  (real Silero VAD, real Whisper tiny.en), as a microphone would; its background decodes run while
  the "user" speaks. Latency = from ``speech_stopped`` (the VAD ending the turn) to the final
  transcript event.
- **baseline**: faster-whisper called directly on the very utterance the turn detector cut (the
  same VAD and detector, run offline), once the turn has ended. Latency = that call's duration,
  also counted from the moment the turn ended.

Both paths wait the same ``silence_duration_ms`` before the turn ends, so the latencies are also
given from the end of the voice itself (``*_from_voice_ms``: the silence wait added). The report
holds medians over utterances x repeats, the ratio streaming / baseline (below 1: streaming is
faster), whether the final transcripts are identical, and what streaming costs: decodes per
utterance (partials and the early final included) against the baseline's one.

``python -m bench.asr [--quick]`` prints the result as JSON.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

UTTERANCES = (
    "What is the weather like in London today?",
    "Turn on the kitchen lights and play some music.",
    "I would like to book a table for two people tomorrow evening.",
    "Hello, my name is Alice and I need help with my account.",
    "Can you remind me to call my sister at six o'clock tonight?",
    "How long does it take to drive from Paris to Berlin by car?",
)
CHUNK_S = 0.04
LEAD_S, TAIL_S = 0.3, 1.2


@dataclass
class _Run:
    stream_ms: float  # speech_stopped -> final transcript
    stopped_after_voice_ms: float  # end of the voice -> speech_stopped (the silence wait)
    decodes: int
    from_stream: bool
    text: str


def measure_asr(quick: bool = False) -> dict[str, Any]:
    """Load tiny.en and Silero, speak the utterances with espeak-ng and measure both paths."""
    from assistant.config import Settings
    from assistant.registry import build_speech_to_text, build_voice_activity

    settings = Settings()
    stt, vad = build_speech_to_text(settings), build_voice_activity(settings)
    sentences = UTTERANCES[:2] if quick else UTTERANCES
    repeats = 1 if quick else 3
    clips = [_speak(sentence) for sentence in sentences]
    _baseline(stt, vad, clips[0])  # warm-up: a process's first decode is slower
    runs: list[tuple[_Run, float, str]] = []
    for _ in range(repeats):
        for clip in clips:
            streamed = asyncio.run(_stream(stt, vad, clip))
            baseline_ms, baseline_text = _baseline(stt, vad, clip)
            runs.append((streamed, baseline_ms, baseline_text))
    return _report(runs, len(sentences), repeats, stt)


def _speak(sentence: str) -> np.ndarray:
    """espeak-ng's speech of ``sentence``, resampled to 16 kHz, with silence around it (N,)."""
    from assistant.ports import SAMPLE_RATE
    from assistant.voice.audio import decode_audio_file

    wav = subprocess.run(["espeak-ng", "--stdin", "--stdout"], input=sentence.encode(),
                         capture_output=True, check=True).stdout  # fmt: skip
    voice = decode_audio_file(wav)  # (V,) float32, with espeak-ng's own quiet ends
    loud = np.flatnonzero(np.abs(voice) > 0.01)
    voice = voice[loud[0] : loud[-1] + 1]  # (V',) from the first to the last audible sample
    lead = np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32)
    tail = np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32)
    return np.concatenate([lead, voice, tail])


async def _stream(stt: Any, vad: Any, clip: np.ndarray) -> _Run:
    """Feed ``clip`` at real time to a voice pipeline; time its events on the wall clock."""
    from assistant.ports import SAMPLE_RATE
    from assistant.voice.audio import float_to_pcm16
    from assistant.voice.pipeline import (
        SpeechEnded,
        TranscriptCompleted,
        VoiceConfig,
        VoicePipeline,
    )

    seen: dict[str, Any] = {}

    async def sink(event: Any) -> None:
        if isinstance(event, SpeechEnded):
            seen["stopped"] = time.perf_counter()
        elif isinstance(event, TranscriptCompleted):
            seen["final"], seen["event"] = time.perf_counter(), event

    counting = _CountingSTT(stt)
    pipeline = VoicePipeline(counting, vad.stream(), VoiceConfig(language="en"), sink)
    step = int(CHUNK_S * SAMPLE_RATE)
    voice_end = clip.shape[0] - int(TAIL_S * SAMPLE_RATE)  # sample where the voice ends
    started = time.perf_counter()
    for begin in range(0, clip.shape[0], step):
        await asyncio.sleep(max(0.0, started + begin / SAMPLE_RATE - time.perf_counter()))
        await pipeline.append_pcm16(float_to_pcm16(clip[begin : begin + step]))
    await pipeline.drain()
    event = seen["event"]
    voice_end_at = started + voice_end / SAMPLE_RATE  # when a live voice would have ended
    return _Run(
        stream_ms=(seen["final"] - seen["stopped"]) * 1000,
        stopped_after_voice_ms=(seen["stopped"] - voice_end_at) * 1000,
        decodes=counting.calls,
        from_stream=event.from_stream,
        text=event.transcript,
    )


def _baseline(stt: Any, vad: Any, clip: np.ndarray) -> tuple[float, str]:
    """The utterance the turn detector cuts from ``clip``, transcribed by faster-whisper directly
    once it has ended: (milliseconds, text)."""
    from assistant.voice.turn_detection import SpeechStopped, TurnDetector

    stream, detector = vad.stream(), TurnDetector()
    events = detector.feed(asyncio.run(stream.probabilities(clip)), clip)
    stops = [e for e in events if isinstance(e, SpeechStopped)]
    audio = stops[0].audio  # (N,) float32
    started = time.perf_counter()
    segments, _ = stt.model.transcribe(
        audio, language="en", beam_size=1, vad_filter=False,
        condition_on_previous_text=False, without_timestamps=True,
    )  # fmt: skip
    text = "".join(segment.text for segment in segments).strip()  # decoding happens here
    return (time.perf_counter() - started) * 1000, text


def _words(text: str) -> list[str]:
    return ["".join(c for c in w.lower() if c.isalnum()) for w in text.split()]


class _CountingSTT:
    """Passes calls to the real port and counts them (decodes per utterance)."""

    def __init__(self, stt: Any) -> None:
        self._stt, self.calls = stt, 0

    async def transcribe(self, audio: np.ndarray, **kw: Any) -> Any:
        self.calls += 1
        return await self._stt.transcribe(audio, **kw)


def _report(
    runs: list[tuple[_Run, float, str]], utterances: int, repeats: int, stt: Any
) -> dict[str, Any]:
    def median(values: list[float]) -> float:
        return round(statistics.median(values), 1)

    stream = [r.stream_ms for r, _, _ in runs]
    base = [b for _, b, _ in runs]
    wait = [r.stopped_after_voice_ms for r, _, _ in runs]
    stream_ms, base_ms, wait_ms = median(stream), median(base), median(wait)
    return {
        "utterances": utterances,
        "repeats": repeats,
        "model": getattr(stt, "name", "faster_whisper") + " (Whisper tiny.en, int8, beam 1)",
        "final_after_stop_ms": stream_ms,
        "final_after_stop_ms_baseline": base_ms,
        "ratio": round(stream_ms / base_ms, 3) if base_ms else None,
        "final_after_stop_ms_mean": round(statistics.fmean(stream), 1),
        "final_after_stop_ms_baseline_mean": round(statistics.fmean(base), 1),
        "final_after_stop_ms_max": round(max(stream), 1),
        "final_after_stop_ms_baseline_max": round(max(base), 1),
        "stop_after_voice_ms": wait_ms,
        "final_from_voice_ms": round(wait_ms + stream_ms, 1),
        "final_from_voice_ms_baseline": round(wait_ms + base_ms, 1),
        "final_from_early_decode": sum(r.from_stream for r, _, _ in runs) / len(runs),
        "same_text_as_baseline": sum(r.text == t for r, _, t in runs) / len(runs),
        "same_words_as_baseline": sum(_words(r.text) == _words(t) for r, _, t in runs) / len(runs),
        "decodes_per_utterance": round(sum(r.decodes for r, _, _ in runs) / len(runs), 2),
        "decodes_per_utterance_baseline": 1,
        "texts": sorted({r.text for r, _, _ in runs}),
    }


if __name__ == "__main__":
    print(json.dumps(measure_asr(quick="--quick" in sys.argv[1:]), indent=2))
