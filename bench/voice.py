"""End of speech -> first reply token: a spoken question with the early start on, the same with it
off (the baseline, side by side in the same run), and the same question typed.

The real server (``assistant serve`` in a subprocess: real Silero VAD, real Whisper tiny.en, the
real SmolLM2 local model, a private ``redis-server``) is driven over a real WebSocket, as a client
would, from this process. Three kinds of turn, each on a fresh session, alternating:

- **voice, early start on** (measured; the server's defaults): the silence that ends the turn is
  ``eager_silence_ms`` once the streaming transcript looks finished, and the reply starts at that
  pause into a buffer, sent when the turn ends (``assistant.voice.speculation``).
- **voice, early start off** (``baseline``): the session turns both off by ``session.update``
  (``early_response: false``, ``eager_silence_ms`` = ``silence_duration_ms``): every turn waits
  the whole ``silence_duration_ms`` and the reply starts after the final transcript, as before.
  ``ratio_vs_baseline`` = on / off medians.

  Each voice turn: a question spoken by espeak-ng (``bench.asr``'s clips: 0.3 s of silence,
  the voice, 1.2 s of silence) is sent at real time in 40 ms binary PCM16 frames, each when a
  microphone would have it (at the end of its 40 ms). Latency = from sending the last frame that
  holds voice to the first ``response.output_text.delta``. The server's turn detection answers
  the turn by itself (no commit). Breakdown, each from the same end of voice:
  ``input_audio_buffer.speech_stopped`` (mostly the deliberate ``silence_duration_ms`` wait), the
  final transcript (``...input_audio_transcription.completed``), the first token.
- **baseline**: the question's transcript (as the voice turn got it, so the model sees the same
  prompt) sent as a typed turn, ``conversation.item.create`` + ``response.create``. Latency =
  from sending them to the first ``response.output_text.delta``: storing the turn and the model's
  time to first token, which the voice turn pays too.

``overhead_ms`` (voice - text medians, early start on) is then what speech costs on top of a typed
turn: the silence wait, the last decode if the one made while the user spoke was not final, the
VAD. ``early_committed`` counts the turns the early reply answered (from the server's
``assistant_voice_early_responses_total``), ``early_dropped`` those it started and threw away. Replies
are cut at ``MAX_OUTPUT_TOKENS`` (only the first token is timed). Medians over utterances x
repeats; a warm-up pair of turns comes first (a process's first decode and generation are slower).

``python -m bench.voice [--quick]`` prints the result as JSON.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.asr import CHUNK_S, TAIL_S, UTTERANCES, _speak
from bench.common import ServerProcess, bench_env, free_port

MAX_OUTPUT_TOKENS = 8
TIMEOUT_S = 60.0
STOPPED = "input_audio_buffer.speech_stopped"
TRANSCRIPT = "conversation.item.input_audio_transcription.completed"
TOKEN = "response.output_text.delta"


@dataclass
class _Voice:
    early: bool  # the early start was on
    stopped_ms: float  # end of voice -> speech_stopped
    transcript_ms: float  # end of voice -> final transcript
    token_ms: float  # end of voice -> first token
    transcript: str


def measure_voice_to_first_token(quick: bool = False) -> dict[str, Any]:
    """Start Redis and the server, play the spoken and typed turns, stop everything."""
    from adapters.memory.embedded_redis import EmbeddedRedis
    from assistant.config import Settings

    sentences = UTTERANCES[:2] if quick else UTTERANCES[:5]
    repeats = 1 if quick else 3
    clips = [_speak(sentence) for sentence in sentences]
    tmp = Path(tempfile.mkdtemp(prefix="assistant-bench-voice-"))
    redis_server, server = None, None
    try:
        redis_server = EmbeddedRedis(tmp / "redis").start()
        env = bench_env(ASSISTANT_REDIS_URL=redis_server.url, ASSISTANT_VOICE__PRELOAD="true")
        port = free_port()
        args = ["-m", "assistant.cli", "serve", "--port", str(port), "--log-level", "warning",
                "--data-dir", str(Settings().data_dir)]  # fmt: skip
        server = ServerProcess("voice-server", args, port, tmp, env).wait_ready(timeout_s=180)
        result = asyncio.run(_measure(server.url(), clips, repeats))
    finally:
        if server is not None:
            server.stop()
        if redis_server is not None:
            redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"utterances": len(sentences), "repeats": repeats, **result}


async def _measure(url: str, clips: list[np.ndarray], repeats: int) -> dict[str, Any]:
    warm, detection = await _voice_turn(url, clips[0], early=True)  # warm-up: not counted
    await _voice_turn(url, clips[0], early=False)
    await _text_turn(url, warm.transcript)
    before = await _early_counts(url)
    voices: list[_Voice] = []
    texts: list[float] = []
    for r in range(repeats):
        for i, clip in enumerate(clips):
            order = (True, False) if (r + i) % 2 == 0 else (False, True)  # on / off alternate
            for early in order:
                voices.append((await _voice_turn(url, clip, early=early))[0])
            texts.append(await _text_turn(url, voices[-1].transcript))
    after = await _early_counts(url)
    counts = {k: after.get(k, 0) - before.get(k, 0) for k in ("committed", "dropped")}
    return _report(voices, texts, detection, counts)


async def _early_counts(url: str) -> dict[str, int]:
    """The server's ``assistant_voice_early_responses_total`` by outcome."""
    import httpx

    http = url.replace("ws://", "http://").replace("/v1/realtime", "/metrics")
    async with httpx.AsyncClient() as client:
        text = (await client.get(http)).text
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("assistant_voice_early_responses_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return counts


async def _open(ws: Any, early: bool = True) -> dict[str, Any]:
    """session.created, then the reply cut at ``MAX_OUTPUT_TOKENS`` (and, ``early`` False, the
    early start off): the wire session."""
    created = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
    session: dict[str, Any] = {"max_output_tokens": MAX_OUTPUT_TOKENS}
    if not early:
        wait = created["session"]["turn_detection"]["silence_duration_ms"]
        session["turn_detection"] = {"type": "server_vad", "eager_silence_ms": wait,
                                     "early_response": False}  # fmt: skip
    update = {"type": "session.update", "session": session}
    await ws.send(json.dumps(update))
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
        _check(event)
        if event["type"] == "session.updated":
            return dict(created["session"])


async def _events(ws: Any) -> dict[str, Any]:
    """Read until ``response.done``: the arrival time of each event type's first occurrence, and
    the final transcript under ``"transcript"``."""
    seen: dict[str, Any] = {}
    while True:
        event = json.loads(await ws.recv())
        seen.setdefault(event["type"], time.perf_counter())
        _check(event)
        if event["type"] == TRANSCRIPT:
            seen["transcript"] = event["transcript"]
        if event["type"] == "response.done":
            if event["response"]["status"] not in ("completed", "incomplete"):
                raise RuntimeError(f"the reply did not complete: {event['response']}")
            return seen


def _check(event: dict[str, Any]) -> None:
    if event["type"] == "error":
        raise RuntimeError(f"the server answered an error: {event['error']}")


async def _voice_turn(url: str, clip: np.ndarray, *, early: bool) -> tuple[_Voice, dict[str, Any]]:
    """Stream ``clip`` at real time on a fresh session (the early start on or off); time the
    events from the end of voice. Also returns the session's ``turn_detection``."""
    from websockets.asyncio.client import connect

    from assistant.ports import SAMPLE_RATE
    from assistant.voice.audio import float_to_pcm16

    step = int(CHUNK_S * SAMPLE_RATE)
    voice_end = clip.shape[0] - int(TAIL_S * SAMPLE_RATE)  # sample where the voice ends
    last_voiced = (voice_end - 1) // step * step  # start of the last frame holding voice
    async with connect(url, compression=None, ping_interval=None, max_size=None) as ws:
        session = await _open(ws, early)
        reader = asyncio.create_task(_events(ws))
        try:
            started, sent = time.perf_counter(), 0.0
            for begin in range(0, clip.shape[0], step):
                end = min(begin + step, clip.shape[0])  # a microphone has the frame at its end
                await asyncio.sleep(max(0.0, started + end / SAMPLE_RATE - time.perf_counter()))
                if reader.done():
                    break  # answered (or failed) before the trailing silence was all sent
                await ws.send(float_to_pcm16(clip[begin:end]))
                if begin == last_voiced:
                    sent = time.perf_counter()
            seen = await asyncio.wait_for(reader, TIMEOUT_S)
        finally:
            reader.cancel()
    if not sent or seen[STOPPED] < sent:
        raise RuntimeError("the turn ended before the voice did (a pause in the speech?)")
    run = _Voice(early, *((seen[kind] - sent) * 1000 for kind in (STOPPED, TRANSCRIPT, TOKEN)),
                 transcript=seen["transcript"])  # fmt: skip
    return run, dict(session["turn_detection"])


async def _text_turn(url: str, text: str) -> float:
    """``text`` as a typed turn on a fresh session: milliseconds from sending to the first token."""
    from websockets.asyncio.client import connect

    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    async with connect(url, compression=None, ping_interval=None, max_size=None) as ws:
        await _open(ws)
        reader = asyncio.create_task(_events(ws))
        try:
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))
            seen = await asyncio.wait_for(reader, TIMEOUT_S)
        finally:
            reader.cancel()
    return (seen[TOKEN] - started) * 1000


def _report(
    runs: list[_Voice], texts: list[float], detection: dict[str, Any], counts: dict[str, int]
) -> dict[str, Any]:
    def median(values: list[float]) -> float:
        return round(statistics.median(values), 1)

    voices = [v for v in runs if v.early]
    baseline = [v for v in runs if not v.early]
    voice_ms, text_ms = median([v.token_ms for v in voices]), median(texts)
    baseline_ms = median([v.token_ms for v in baseline])
    return {
        "median_ms": voice_ms,
        "baseline_median_ms": baseline_ms,
        "ratio_vs_baseline": round(voice_ms / baseline_ms, 3) if baseline_ms else None,
        "baseline_speech_stopped_ms": median([v.stopped_ms for v in baseline]),
        "baseline_runs_ms": [round(v.token_ms, 1) for v in baseline],
        "early_committed": counts["committed"],
        "early_dropped": counts["dropped"],
        "text_median_ms": text_ms,
        "ratio_vs_text": round(voice_ms / text_ms, 3) if text_ms else None,
        "overhead_ms": round(voice_ms - text_ms, 1),
        "speech_stopped_ms": median([v.stopped_ms for v in voices]),
        "transcript_ms": median([v.transcript_ms for v in voices]),
        "first_token_ms": voice_ms,
        "stop_to_transcript_ms": median([v.transcript_ms - v.stopped_ms for v in voices]),
        "transcript_to_token_ms": median([v.token_ms - v.transcript_ms for v in voices]),
        "silence_wait_ms": detection["silence_duration_ms"],
        "eager_silence_ms": detection["eager_silence_ms"],
        "runs": len(voices),
        "max_ms": round(max(v.token_ms for v in voices), 1),
        "text_max_ms": round(max(texts), 1),
        "max_output_tokens": MAX_OUTPUT_TOKENS,
        "voice_runs_ms": [round(v.token_ms, 1) for v in voices],
        "text_runs_ms": [round(t, 1) for t in texts],
        "transcripts": sorted({v.transcript for v in voices}),
        "server": "assistant serve: Silero VAD, Whisper tiny.en, SmolLM2-135M, own redis-server",
    }


if __name__ == "__main__":
    print(json.dumps(measure_voice_to_first_token(quick="--quick" in sys.argv[1:]), indent=2))
