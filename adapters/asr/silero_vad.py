"""Silero VAD behind the ``VoiceActivity`` port: one speech probability per 512-sample window.

The ONNX model is the one faster-whisper bundles (``faster_whisper/assets/silero_vad_v6.onnx``), so
it is on disk wherever the ``voice`` extra is installed, with no download. It is run here with
onnxruntime directly rather than through faster-whisper's whole-file ``get_speech_timestamps``,
because a live stream arrives a chunk at a time:

- the model takes ``input`` (S, 576): S windows of 512 samples, each preceded by the last 64 samples
  of the window before it (its *context*; zeros before the first window), and the LSTM state
  ``h``, ``c`` (1, 1, 128). The S windows are one sequence: the state runs through them in order, so
  one call over S windows equals S calls over one window each, and the state and the last context
  carry over from one call to the next;
- a trailing partial window waits for the next call.

One ``SileroVAD`` holds the (thread-safe) onnxruntime session, loaded once per process;
``stream()`` gives each audio stream a ``SileroStream`` with its own state.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

try:
    import numpy as np
    import onnxruntime
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the silero_vad voice activity adapter needs onnxruntime ({exc}); "
        "install the extra: pip install 'assistant[voice]'"
    ) from exc

from assistant.config import Settings
from assistant.errors import ConfigurationError, MissingDependencyError
from assistant.ports import VoiceActivity, VoiceActivityStream

WINDOW = 512  # samples per window at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window put in front of each window
STATE_SHAPE = (1, 1, 128)  # LSTM h and c
_INPUTS = {"input", "h", "c"}


def bundled_model_path() -> Path:
    """The newest ``silero_vad*.onnx`` in faster-whisper's assets (found without importing
    faster-whisper, which would pull in CTranslate2)."""
    spec = importlib.util.find_spec("faster_whisper")
    origin = spec.origin if spec is not None else None
    assets = Path(origin).parent / "assets" if origin else None
    found = sorted(assets.glob("silero_vad*.onnx")) if assets is not None else []
    if not found:
        raise MissingDependencyError(
            "the Silero VAD model comes with faster-whisper (faster_whisper/assets/"
            "silero_vad_v6.onnx); install the extra: pip install 'assistant[voice]'"
        )
    return found[-1]


class SileroVAD(VoiceActivity):
    """Streaming Silero VAD over a built onnxruntime session."""

    def __init__(self, session: Any, *, name: str = "silero_vad") -> None:
        names = {i.name for i in session.get_inputs()}
        if names != _INPUTS:
            raise ConfigurationError(
                f"{name}: the ONNX model takes inputs {sorted(names)}, expected {sorted(_INPUTS)} "
                "(Silero VAD v5/v6 as faster-whisper ships it)"
            )
        self.session = session
        self.name = name
        self.window_samples = WINDOW

    @classmethod
    def from_path(cls, path: str | Path | None = None, *, threads: int = 1, **kw: Any) -> SileroVAD:
        """Load the ONNX model (default: the one bundled in faster-whisper) on the CPU. One intra-op
        thread is plenty: a second of audio takes about a millisecond."""
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 4  # errors are raised, not logged
        model = Path(path) if path is not None else bundled_model_path()
        try:
            session = onnxruntime.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigurationError(f"cannot load the Silero VAD model {model}: {exc}") from exc
        return cls(session, **kw)

    def _stream_impl(self) -> SileroStream:
        return SileroStream(self)


class SileroStream(VoiceActivityStream):
    """One stream's LSTM state, context and pending samples over a ``SileroVAD``'s session."""

    def __init__(self, model: SileroVAD) -> None:
        super().__init__(model)
        self.session = model.session
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros(STATE_SHAPE, np.float32)  # (1, 1, 128)
        self._c = np.zeros(STATE_SHAPE, np.float32)  # (1, 1, 128)
        self._context = np.zeros(CONTEXT, np.float32)  # (64,) tail of the previous window
        self._pending = np.zeros(0, np.float32)  # (P,) P < 512 samples not yet in a window

    def _probabilities_impl(self, audio: np.ndarray) -> np.ndarray:
        """(N,) float32 at 16 kHz -> (K,) float32 speech probabilities, one per whole window of
        the pending samples plus ``audio``; the rest waits for the next call."""
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"audio must be mono (N,), got shape {samples.shape}")
        buffer = np.concatenate([self._pending, samples])  # (P + N,)
        count = buffer.shape[0] // WINDOW  # K
        self._pending = buffer[count * WINDOW :].copy()  # (P',)
        if count == 0:
            return np.zeros(0, np.float32)
        windows = buffer[: count * WINDOW].reshape(count, WINDOW)  # (K, 512)
        contexts = np.concatenate([self._context[None, :], windows[:-1, -CONTEXT:]])  # (K, 64)
        batch = np.concatenate([contexts, windows], axis=1)  # (K, 576)
        probs, self._h, self._c = self.session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )  # probs (K,) or (K, 1); h, c (1, 1, 128)
        self._context = windows[-1, -CONTEXT:].copy()  # (64,)
        return np.asarray(probs, dtype=np.float32).reshape(count)  # (K,)


def build(settings: Settings) -> SileroVAD:
    """The bundled Silero VAD; ``stream()`` it per audio stream."""
    return SileroVAD.from_path()


__all__ = ["SileroStream", "SileroVAD", "bundled_model_path", "build"]
