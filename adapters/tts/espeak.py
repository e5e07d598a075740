"""eSpeak NG behind the ``TextToSpeech`` port: the default voice for spoken replies.

The Debian ``espeak-ng`` program (installed by ``scripts/setup.sh``) is run once per piece of text:
the text goes in on stdin (never as an argument, so a reply starting with ``-`` is just text), a
22.05 kHz PCM16 WAV comes out on stdout and is converted to float32 16 kHz mono by PyAV's
resampler (``assistant.audio.decode_audio_file``). About 20 ms per sentence on one core.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import Settings
from assistant.errors import (
    ConfigurationError,
    InvalidRequestError,
    MissingDependencyError,
    ModelError,
)
from assistant.ports import TextToSpeech, TextToSpeechCapabilities
from assistant.voice.audio import AudioLimits, decode_audio_file

EXECUTABLE = "espeak-ng"
_VOICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}(\+[A-Za-z0-9]{1,16})?$")
_LIMITS = AudioLimits(max_seconds=600.0, max_bytes=64 * 1024 * 1024)


class EspeakTTS(TextToSpeech):
    """Speaks text with the ``espeak-ng`` program at ``executable``."""

    def __init__(
        self,
        executable: str | Path,
        *,
        voice: str = "en-us",
        rate_wpm: int = 175,
        voices: tuple[str, ...] | None = None,
        name: str = "espeak",
        timeout_s: float = 30.0,
    ) -> None:
        self.executable = str(executable)
        self.name = name
        self.rate_wpm = rate_wpm
        self.timeout_s = timeout_s
        #: Known voice names and languages; None: not checked.
        self.voices = frozenset(voices) if voices is not None else None
        self.capabilities = TextToSpeechCapabilities(voices=tuple(sorted(self.voices or ())) or None)
        try:
            self.voice = self.check_voice(voice)
        except InvalidRequestError as exc:
            raise ConfigurationError(f"{name}: {exc.message}") from None

    @classmethod
    def from_path(cls, executable: str | Path | None = None, **kw: Any) -> EspeakTTS:
        """``executable``: the program (default: ``espeak-ng`` on the PATH). Its voices are read
        once (``espeak-ng --voices``) so a session asking for an unknown one is told at once."""
        found = str(executable) if executable is not None else shutil.which(EXECUTABLE)
        if not found or not Path(found).is_file():
            raise MissingDependencyError(
                f"spoken replies need {EXECUTABLE}; install it (apt-get install espeak-ng, "
                "brew install espeak-ng) or run ./scripts/setup.sh"
            )
        return cls(found, voices=list_voices(found), **kw)

    def check_voice(self, voice: str) -> str:
        """``voice`` if this adapter can speak with it, else ``InvalidRequestError``
        (``unsupported_voice``). A ``+variant`` suffix (``en-us+f3``) is allowed."""
        base = voice.split("+", 1)[0].lower()
        if not _VOICE_NAME.match(voice) or (self.voices is not None and base not in self.voices):
            raise InvalidRequestError(
                f"{self.name} has no voice {voice!r} (e.g. en-us, en-gb)", code="unsupported_voice"
            )
        return voice

    def _synthesize_impl(self, text: str, voice: str | None) -> np.ndarray:
        voice = self.check_voice(voice) if voice else self.voice
        if not text.strip():
            return np.zeros(0, np.float32)
        command = [self.executable, "--stdin", "--stdout", "-v", voice, "-s", str(self.rate_wpm)]
        done = subprocess.run(
            command, input=text.encode("utf-8"), capture_output=True, timeout=self.timeout_s
        )
        if done.returncode != 0 or len(done.stdout) <= 44:  # a bare WAV header: nothing spoken
            problem = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
            raise ModelError(f"{self.name}: {EXECUTABLE} gave no audio: {problem}")
        return decode_audio_file(done.stdout, limits=_LIMITS)  # (N,) float32 16 kHz


def list_voices(executable: str) -> tuple[str, ...]:
    """Languages and voice names ``espeak-ng --voices`` lists, lowercased."""
    done = subprocess.run(
        [executable, "--voices"], capture_output=True, text=True, timeout=30, check=False
    )
    names: set[str] = set()
    for line in done.stdout.splitlines()[1:]:  # Pty Language Age/Gender VoiceName File ...
        fields = line.split()
        if len(fields) >= 4:
            names.update((fields[1].lower(), fields[3].lower()))
    return tuple(sorted(names))


def build(settings: Settings) -> EspeakTTS:
    tts = getattr(settings, "tts", None)
    return EspeakTTS.from_path(
        voice=getattr(tts, "voice", "en-us"), rate_wpm=getattr(tts, "rate_wpm", 175)
    )


__all__ = ["EspeakTTS", "build", "list_voices"]
