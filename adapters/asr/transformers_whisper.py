"""Whisper through Hugging Face transformers (``WhisperForConditionalGeneration`` + its
``WhisperProcessor``) behind the ``SpeechToText`` port: for a fine-tuned Whisper saved with
``save_pretrained``, or a hub id already in the local Hugging Face cache.

Nothing here downloads unless ``download=True`` is asked for. Audio longer than Whisper's 30 s
window is cut into 30 s pieces transcribed one after another (no timestamp-based stitching).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import numpy as np
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the transformers_whisper speech-to-text adapter needs torch and transformers ({exc}); "
        "install the extra: pip install 'assistant[local-llm]'"
    ) from exc

from assistant.config import Settings
from assistant.errors import ConfigurationError, InvalidRequestError
from assistant.ports import SAMPLE_RATE, SpeechToText, SpeechToTextCapabilities, Transcript

WINDOW_S = 30  # Whisper's input window


class TransformersWhisperSTT(SpeechToText):
    """Transcribes with a built ``WhisperForConditionalGeneration`` and its processor."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name: str = "transformers_whisper",
        language: str | None = None,
        max_new_tokens: int = 200,
        timeout_s: float = 120.0,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.timeout_s = timeout_s
        generation = model.generation_config
        self.multilingual = bool(getattr(generation, "is_multilingual", False))
        self._languages = frozenset(getattr(generation, "lang_to_id", None) or {})
        self.language = language if self.multilingual else "en"
        self.capabilities = SpeechToTextCapabilities(languages=None if self.multilingual else ("en",))

    @classmethod
    def from_path(
        cls, path_or_hub_id: str | Path, *, download: bool = False, **kw: Any
    ) -> TransformersWhisperSTT:
        """Load from a ``save_pretrained`` directory (model and processor), or a hub id found in
        the local Hugging Face cache (fetched only when ``download`` is True)."""
        path = Path(path_or_hub_id).expanduser()
        if not path.is_dir() and (path.is_absolute() or str(path_or_hub_id).startswith(".")):
            raise ConfigurationError(f"no transformers Whisper directory at {path}")
        source = str(path) if path.is_dir() else str(path_or_hub_id)
        local = not download
        try:
            model = WhisperForConditionalGeneration.from_pretrained(source, local_files_only=local)
            processor = WhisperProcessor.from_pretrained(source, local_files_only=local)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot load a transformers Whisper from {source!r}: {exc}"
            ) from exc
        return cls(model, processor, **kw)

    def _transcribe_impl(
        self, audio: np.ndarray, language: str | None, prompt: str | None
    ) -> Transcript:
        samples = audio  # (N,) float32, checked by the port
        language = self._language(language)
        duration_s = samples.shape[0] / SAMPLE_RATE
        window = WINDOW_S * SAMPLE_RATE
        pieces = [self._window(samples[i : i + window], language, prompt)
                  for i in range(0, samples.shape[0], window)]  # fmt: skip
        text = " ".join(p for p in pieces if p).strip()
        return Transcript(text=text, language=language or self.language, duration_s=duration_s)

    def _window(self, samples: np.ndarray, language: str | None, prompt: str | None) -> str:
        features = self.processor(
            samples, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features  # (1, n_mels, 3000)
        options: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.multilingual:
            options.update(task="transcribe", language=language)
        if prompt:
            options["prompt_ids"] = torch.tensor(self.processor.get_prompt_ids(prompt))
        with torch.inference_mode():
            ids = self.model.generate(features, **options)  # (1, T)
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    def _language(self, language: str | None) -> str | None:
        language = language or self.language
        if language is None:
            return None
        if not self.multilingual and language != "en":
            raise InvalidRequestError(
                f"{self.name} is English-only; it cannot transcribe {language!r}",
                code="unsupported_language",
            )
        if self.multilingual and self._languages and f"<|{language}|>" not in self._languages:
            raise InvalidRequestError(
                f"{self.name} cannot transcribe language {language!r}", code="unsupported_language"
            )
        return language


def build(settings: Settings) -> TransformersWhisperSTT:
    """``ASSISTANT_ASR__MODEL``: a ``save_pretrained`` directory or a cached hub id (required)."""
    asr = getattr(settings, "asr", None)
    model = getattr(asr, "model", "") or ""
    if not model:
        raise ConfigurationError(
            "the transformers_whisper adapter needs ASSISTANT_ASR__MODEL: a directory saved with "
            "save_pretrained (model and WhisperProcessor) or a hub id in the local cache"
        )
    return TransformersWhisperSTT.from_path(model, language=getattr(asr, "language", None))


__all__ = ["TransformersWhisperSTT", "build"]
