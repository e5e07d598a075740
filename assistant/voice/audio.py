"""Audio in the shape the speech ports take: float32 mono at 16 kHz, samples in [-1, 1].

Two ways in: raw PCM16 little-endian (the mic path: binary WebSocket frames or base64 in
``input_audio_buffer.append``) and whole audio files (``input_audio`` content parts: WAV, WebM/Opus,
OGG, MP3), decoded with PyAV. PyAV bundles its own FFmpeg libraries, so no system ffmpeg is needed;
it is an optional dependency (the ``voice`` extra), imported only when a file is decoded.

Errors carry stable codes: ``invalid_audio_bytes`` (odd PCM16 byte count), ``invalid_base64``,
``invalid_audio`` (a file that does not decode), ``audio_too_large``, ``audio_too_long``.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

import numpy as np

from assistant.config import VoiceSettings, voice_default
from assistant.errors import InvalidRequestError, MissingDependencyError
from assistant.ports import SAMPLE_RATE

_PCM16_SCALE = 32768.0
_VOICE_EXTRA_HINT = "install the extra: pip install 'assistant[voice]'"


@dataclass(frozen=True)
class AudioLimits:
    """What one turn's audio may be: ``max_seconds`` of audio, ``max_bytes`` of encoded input."""

    max_seconds: float = voice_default("max_turn_s")
    max_bytes: int = voice_default("max_upload_bytes")

    @classmethod
    def uploads(cls, voice: VoiceSettings) -> AudioLimits:
        """What an uploaded audio file may be."""
        return cls(max_seconds=voice.max_upload_s, max_bytes=voice.max_upload_bytes)

    @property
    def max_samples(self) -> int:
        return int(self.max_seconds * SAMPLE_RATE)

    def check_bytes(self, size: int) -> None:
        if size > self.max_bytes:
            raise InvalidRequestError(
                f"the audio takes {size} bytes; at most {self.max_bytes} are accepted",
                code="audio_too_large",
            )

    def check_samples(self, samples: int, sample_rate: int = SAMPLE_RATE) -> None:
        seconds = samples / sample_rate
        if seconds > self.max_seconds:
            raise InvalidRequestError(
                f"the audio lasts more than {self.max_seconds:g} s ({seconds:.1f} s so far)",
                code="audio_too_long",
            )


# -- PCM16 -----------------------------------------------------------------------------------------


def pcm16_to_float(data: bytes, max_bytes: int | None = None) -> np.ndarray:
    """PCM16 little-endian mono bytes -> float32 samples in [-1, 1), shape (len(data) // 2,).
    The one check of raw PCM: at most ``max_bytes`` (``audio_too_large``), whole 16-bit samples
    (``invalid_audio_bytes``)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidRequestError(
            f"an audio chunk of {len(data)} bytes exceeds {max_bytes}", code="audio_too_large"
        )
    if len(data) % 2:
        raise InvalidRequestError(
            f"PCM16 audio needs an even number of bytes (2 per sample), got {len(data)}",
            code="invalid_audio_bytes",
        )
    pcm = np.frombuffer(data, dtype="<i2")  # (N,) int16
    return pcm.astype(np.float32) / _PCM16_SCALE  # (N,) float32


def float_to_pcm16(audio: np.ndarray) -> bytes:
    """float samples (N,) in [-1, 1] -> PCM16 little-endian bytes (2N); values outside are clipped.
    Exact inverse of ``pcm16_to_float``."""
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)  # (N,)
    scaled = np.rint(samples * _PCM16_SCALE)  # (N,) float32
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


# -- base64 ----------------------------------------------------------------------------------------


def decode_base64(text: str) -> bytes:
    """Standard base64 -> bytes. A ``data:...;base64,`` prefix (a data URL) is accepted."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise InvalidRequestError("the data URL is not base64-encoded", code="invalid_base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(
            f"the audio is not valid base64: {exc}", code="invalid_base64"
        ) from exc


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def base64_pcm16_to_float(text: str) -> np.ndarray:
    """base64 of PCM16 little-endian (``input_audio_buffer.append``) -> float32 samples (N,)."""
    return pcm16_to_float(decode_base64(text))


def float_to_base64_pcm16(audio: np.ndarray) -> str:
    """float32 samples (N,) -> base64 of PCM16 little-endian (``response.output_audio.delta``)."""
    return encode_base64(float_to_pcm16(audio))


# -- audio files -----------------------------------------------------------------------------------


def decode_audio_file(data: bytes, *, limits: AudioLimits | None = None) -> np.ndarray:
    """A whole audio file (WAV, WebM/Opus, OGG, MP3, ...) -> float32 mono 16 kHz samples (N,).

    Channels are averaged and the rate converted by FFmpeg's resampler. Decoding stops as soon as
    the audio passes ``limits.max_seconds``, so a small file that expands to hours costs little.
    """
    limits = limits or AudioLimits()
    limits.check_bytes(len(data))
    if not data:
        raise InvalidRequestError("the audio file is empty", code="invalid_audio")
    av = _import_av()
    try:
        chunks = _decode_with_av(av, data, limits)
    except av.FFmpegError as exc:
        # FFmpeg's reason only: its str() has an errno, '<none>' for the file, C calls
        reason = (exc.strerror or "").strip() or "not a file FFmpeg can read"
        raise InvalidRequestError(
            f"the audio cannot be decoded: {reason.lower()}", code="invalid_audio"
        ) from exc
    if not chunks:
        raise InvalidRequestError("the audio file holds no audio samples", code="invalid_audio")
    return np.concatenate(chunks)  # (N,) float32


def _import_av():  # noqa: ANN202 - the av module
    try:
        import av
    except ImportError as exc:
        raise MissingDependencyError(
            f"decoding audio files needs PyAV ({exc}); {_VOICE_EXTRA_HINT}"
        ) from exc
    return av


def _decode_with_av(av, data: bytes, limits: AudioLimits) -> list[np.ndarray]:  # noqa: ANN001
    """Decode the first audio stream to float32 16 kHz, channels averaged; one (n,) per frame."""
    # Planar float at 16 kHz in the input's own layout; the channels are averaged here rather than
    # by FFmpeg, whose stereo downmix adds the channels at -3 dB (identical channels get louder).
    resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise InvalidRequestError("the file holds no audio stream", code="invalid_audio")
        for frame in _frames(av, container, container.streams.audio[0]):
            frame.pts = None  # the resampler checks timestamps; some muxers write odd ones
            for out in resampler.resample(frame):
                chunks.append(_mono(out))
                total += chunks[-1].shape[0]
            limits.check_samples(total)
    chunks.extend(_mono(out) for out in resampler.resample(None))  # what the resampler holds
    return chunks


def _mono(frame) -> np.ndarray:  # noqa: ANN001 - av.AudioFrame
    planes = frame.to_ndarray()  # (C, n) planar float32
    return planes.mean(axis=0, dtype=np.float32)  # (n,)


def _frames(av, container, stream):  # noqa: ANN001, ANN202
    """The stream's decoded frames. A packet FFmpeg flags as invalid data is skipped (as
    faster-whisper does); a file that is invalid as a whole fails in ``av.open``. A truncated file
    (a recording cut short) gives the frames it holds."""
    for packet in container.demux(stream):  # the last packet is empty: it flushes the decoder
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            continue
        yield from frames


__all__ = [
    "AudioLimits",
    "base64_pcm16_to_float",
    "decode_audio_file",
    "decode_base64",
    "encode_base64",
    "float_to_base64_pcm16",
    "float_to_pcm16",
    "pcm16_to_float",
]
