"""Whisper on a short audio window: a spoken turn of a few seconds decoded with the encoder run on
``window_s`` of audio instead of Whisper's fixed 30 s.

Whisper's encoder always takes 30 s (3000 mel frames): a 3 s question is padded with 27 s of
silence, and the encoder's cost (attention over 1500 positions) is most of a decode. whisper.cpp's
``audio_ctx`` runs the encoder on fewer frames; the same works through CTranslate2, which takes
features of any length up to 3000 frames. Measured on this 2-core machine (Whisper tiny.en int8,
espeak-ng sentences of 1-4 s, the machine loaded): a 10 s window decodes in a median 280-310 ms
against 1,960 ms on 30 s, with the same words on 12 of 13 sentences; the miss, "I'd like to
order a", became "I'd like to draw the ray." on 10 s and on 20 s windows alike (30 s: "I'd like
to order a..."). A 5 s window got more words wrong. So 10 s is the default, an utterance is only
decoded this way with at least ``MARGIN_S`` of silence after it inside the window, and
``asr.short_window_s = 0`` gives Whisper's own 30 s back.

Greedy at temperature 0 only: when the result looks unreliable (average log probability below
-1, or a compression ratio above 2.4: faster-whisper's thresholds for trying again), ``decode``
returns None and the caller decodes the usual way (which also handles no-speech audio).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

#: Silence the window keeps after the audio (Whisper saw speech followed by padding in training).
MARGIN_S = 1.0
LOG_PROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4


class ShortWindowDecoder:
    """Decodes with the encoder on ``window_s`` of audio; ``model`` is a
    ``faster_whisper.WhisperModel``."""

    def __init__(self, model: Any, window_s: float, *, beam_size: int = 1) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model = model
        self.window_s = window_s
        self.beam_size = beam_size
        self.frames = int(window_s * 100)  # mel frames: one per 10 ms
        self._tokenizers: dict[str, tuple[Any, list[int], tuple[int, ...]]] = {}
        self._tokenizer_class = Tokenizer
        self._suppressed = get_suppressed_tokens

    def fits(self, samples: int, sample_rate: int) -> bool:
        return 0 < samples / sample_rate <= self.window_s - MARGIN_S

    def decode(self, audio: np.ndarray, language: str) -> str | None:
        """The transcript of ``audio`` (float32 (N,) 16 kHz, ``fits``), or None: decode it the
        usual way."""
        import ctranslate2

        tokenizer, prompt, suppress = self._tokenizer(language)
        features = self.model.feature_extractor(audio)  # (80, T)
        frames = np.zeros((features.shape[0], self.frames), np.float32)  # (80, F)
        used = min(features.shape[1], self.frames)
        frames[:, :used] = features[:, :used]
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(frames[None]))
        (result,) = self.model.model.generate(
            encoded, [prompt], beam_size=self.beam_size, max_length=self.model.max_length,
            suppress_blank=True, suppress_tokens=list(suppress), return_scores=True,
        )  # fmt: skip
        sequence = result.sequences_ids[0]
        text = tokenizer.decode([t for t in sequence if t < tokenizer.eot]).strip()
        logprob = result.scores[0] * len(sequence) / (len(sequence) + 1)  # faster-whisper's
        if logprob < LOG_PROB_THRESHOLD or _compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
            return None
        return text

    def _tokenizer(self, language: str) -> tuple[Any, list[int], tuple[int, ...]]:
        cached = self._tokenizers.get(language)
        if cached is None:
            model = self.model
            tokenizer = self._tokenizer_class(
                model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                language=language,
            )  # fmt: skip
            prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
            cached = (tokenizer, prompt, self._suppressed(tokenizer, [-1]))
            self._tokenizers[language] = cached
        return cached


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


__all__ = ["MARGIN_S", "ShortWindowDecoder"]
