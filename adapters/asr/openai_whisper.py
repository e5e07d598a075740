"""Whisper through OpenAI's reference ``openai-whisper`` package behind the ``SpeechToText`` port:
for a local ``.pt`` checkpoint (``{"dims", "model_state_dict"}`` as the package saves them), or a
model name (``tiny.en``, ``base``, ...) whose checkpoint is already in the download folder.

``openai-whisper`` is not a dependency of the project (it pulls in its own torch and tiktoken
pins): install it yourself (``pip install openai-whisper``) to use this adapter. Nothing here
downloads unless ``download=True`` is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

try:
    import numpy as np
    import whisper
except ImportError as exc:  # pragma: no cover - depends on what the user installed
    raise ImportError(
        f"the openai_whisper speech-to-text adapter needs the openai-whisper package ({exc}); "
        "install it with: pip install openai-whisper"
    ) from exc

from assistant.config import Settings
from assistant.errors import ConfigurationError, InvalidRequestError
from assistant.ports import SAMPLE_RATE, SpeechToText, SpeechToTextCapabilities, Transcript


def default_download_root() -> Path:
    """Where ``openai-whisper`` keeps checkpoints: ``$XDG_CACHE_HOME/whisper`` or
    ``~/.cache/whisper`` (the package's own default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "whisper"


class OpenAIWhisperSTT(SpeechToText):
    """Transcribes with a built ``whisper.model.Whisper``."""

    def __init__(
        self,
        model: Any,
        *,
        name: str = "openai_whisper",
        language: str | None = None,
        beam_size: int = 1,
        timeout_s: float = 120.0,
    ) -> None:
        self.model = model
        self.name = name
        self.beam_size = beam_size
        self.timeout_s = timeout_s
        self.multilingual = bool(model.is_multilingual)
        self.language = language if self.multilingual else "en"
        self.capabilities = SpeechToTextCapabilities(languages=None if self.multilingual else ("en",))

    @classmethod
    def from_path(
        cls,
        checkpoint_or_name: str | Path,
        *,
        download: bool = False,
        download_root: str | Path | None = None,
        **kw: Any,
    ) -> OpenAIWhisperSTT:
        """Load a ``.pt`` checkpoint file on the CPU, or a model name whose checkpoint is in
        ``download_root`` (fetched there only when ``download`` is True)."""
        path = Path(checkpoint_or_name).expanduser()
        root = Path(download_root) if download_root else default_download_root()
        if path.is_file():
            source = str(path)
        elif not download and not (root / f"{checkpoint_or_name}.pt").is_file():
            raise ConfigurationError(
                f"no Whisper checkpoint at {path} nor {root / f'{checkpoint_or_name}.pt'} "
                "(give a .pt file; nothing is downloaded)"
            )
        else:
            source = str(checkpoint_or_name)
        try:
            model = whisper.load_model(source, device="cpu", download_root=str(root))
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise ConfigurationError(f"cannot load the Whisper checkpoint {source!r}: {exc}") from exc
        return cls(model, **kw)

    def _transcribe_impl(
        self, audio: np.ndarray, language: str | None, prompt: str | None
    ) -> Transcript:
        samples = audio  # (N,) float32, checked by the port
        language = language or self.language
        if language is not None and not self.multilingual and language != "en":
            raise InvalidRequestError(
                f"{self.name} is English-only; it cannot transcribe {language!r}",
                code="unsupported_language",
            )
        duration_s = samples.shape[0] / SAMPLE_RATE
        if samples.shape[0] == 0:
            return Transcript(text="", language=language, duration_s=0.0)
        result = self.model.transcribe(
            samples,
            language=language,
            initial_prompt=prompt or None,
            beam_size=self.beam_size if self.beam_size > 1 else None,
            condition_on_previous_text=False,
            fp16=False,  # CPU
            verbose=None,
        )
        return Transcript(
            text=str(result.get("text", "")).strip(),
            language=result.get("language") or language,
            duration_s=duration_s,
        )


def build(settings: Settings) -> OpenAIWhisperSTT:
    """``ASSISTANT_ASR__MODEL``: a ``.pt`` checkpoint, or a model name already downloaded."""
    asr = getattr(settings, "asr", None)
    model = getattr(asr, "model", "") or "tiny.en"
    return OpenAIWhisperSTT.from_path(
        model, language=getattr(asr, "language", None), beam_size=getattr(asr, "beam_size", 1)
    )


__all__ = ["OpenAIWhisperSTT", "build", "default_download_root"]
