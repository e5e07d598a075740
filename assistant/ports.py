"""The interfaces adapters implement. The core talks to the outside world only through these.

Each port's public method owns timeouts, metrics and error mapping; an adapter implements the small
``_..._impl`` method beneath it. Capabilities are declared as data (``LanguageModelCapabilities``),
never discovered with ``isinstance``.
"""

from __future__ import annotations

import abc
import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from assistant.errors import (
    AssistantError,
    ModelError,
    ModelTimeoutError,
    SessionBusyError,
    StoreError,
)
from assistant.messages import Message, MessageStatus, SessionInfo

# --------------------------------------------------------------------------------------------------
# Language model
# --------------------------------------------------------------------------------------------------

if TYPE_CHECKING:
    import numpy as np

_T = TypeVar("_T")
PromptRole = Literal["system", "user", "assistant"]


#: Where an image's embeddings go in a prompt message's text (one marker per image, in order).
IMAGE_MARKER = "<|image|>"


@dataclass(frozen=True)
class PromptImage:
    """An image in a prompt: projected vectors for a model with the ``embeddings`` capability, or
    the decoded pixels for one with the ``images`` capability (a native vision-language model)."""

    key: str  # the image's sha256 (and projector): equal keys mean equal inputs
    embeddings: "np.ndarray | None" = None  # (N, H) float32, H the language model's hidden size
    pixels: "np.ndarray | None" = None  # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class PromptMessage:
    """One message of a prompt as the language model sees it: a role, its text and, for a model
    that takes embeddings, the images whose ``IMAGE_MARKER`` stand in the text."""

    role: PromptRole
    text: str
    images: tuple[PromptImage, ...] = ()


@dataclass(frozen=True)
class Prompt:
    messages: tuple[PromptMessage, ...]
    #: Identifies the conversation (the session id) so an adapter may reuse work from its previous
    #: turn, such as the KV cache of the unchanged prefix. None: nothing to reuse.
    cache_key: str | None = None


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class LanguageModelCapabilities:
    """What a language model accepts, as data. The orchestrator picks how images reach it from this."""

    embeddings: bool = False  # accepts inputs_embeds (projected image embeddings spliced in)
    images: bool = False  # accepts images themselves (OpenAI-style image_url parts)
    streaming: bool = True
    context_tokens: int = 2048


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class CancelToken:
    """Thread-safe cancellation flag shared between the event loop and a generation thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass
class Generation:
    """A streaming generation: iterate it for text deltas; ``usage`` and ``finish_reason`` are final
    once iteration ends. ``cancel()`` stops it within one token."""

    _chunks: AsyncIterator[str]
    cancel_token: CancelToken
    usage: Usage = field(default_factory=Usage)
    finish_reason: FinishReason | None = None
    cancel_requested: bool = False
    first_token_s: float | None = None

    def cancel(self) -> None:
        self.cancel_requested = True
        self.cancel_token.cancel()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks

    async def aclose(self) -> None:
        """Stop generating now and release the worker (safe to call more than once)."""
        self.cancel_token.cancel()
        await _aclose(self._chunks)


class LanguageModel(abc.ABC):
    """A chat language model that streams its reply as text deltas."""

    name: str = "language_model"
    capabilities: LanguageModelCapabilities = LanguageModelCapabilities()
    #: Seconds allowed between two deltas (the first one included) before the generation fails.
    token_timeout_s: float = 120.0

    def stream(self, prompt: Prompt, options: GenerationOptions | None = None) -> Generation:
        """Start generating. Errors from the adapter surface as ``ModelError`` while iterating."""
        generation = Generation(_chunks=_empty(), cancel_token=CancelToken())
        generation._chunks = self._guarded(generation, prompt, options or GenerationOptions())
        return generation

    async def _guarded(
        self, generation: Generation, prompt: Prompt, options: GenerationOptions
    ) -> AsyncIterator[str]:
        started = time.perf_counter()
        chunks = self._stream_impl(prompt, options, generation.cancel_token, generation.usage)
        iterator = chunks.__aiter__()
        stall = _StallTimer(self.token_timeout_s)
        try:
            while not generation.cancel_requested:
                stall.waiting_since = stall.loop.time()
                try:
                    delta = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if not stall.fired:
                        raise
                    stall.task.uncancel()
                    raise ModelTimeoutError(
                        f"{self.name}: no token within {self.token_timeout_s:.0f} s"
                    ) from None
                finally:
                    stall.waiting_since = None  # our consumer's time with a delta is not the model's
                if generation.first_token_s is None:
                    generation.first_token_s = time.perf_counter() - started
                if delta:
                    yield delta
        except AssistantError:
            generation.finish_reason = "error"
            raise
        except GeneratorExit:
            generation.finish_reason = "cancelled"
            raise
        except Exception as exc:  # an adapter failure gets a stable code
            generation.finish_reason = "error"
            raise ModelError(f"{self.name} failed: {exc}") from exc
        finally:
            stall.close()
            generation.cancel_token.cancel()  # stops a thread still generating after an early exit
            await _aclose(chunks)
        if generation.cancel_requested:
            generation.finish_reason = "cancelled"
        elif generation.usage.output_tokens >= options.max_new_tokens:
            generation.finish_reason = "length"
        else:
            generation.finish_reason = "stop"

    @abc.abstractmethod
    def _stream_impl(
        self, prompt: Prompt, options: GenerationOptions, cancel: CancelToken, usage: Usage
    ) -> AsyncIterator[str]:
        """Yield text deltas; count tokens into ``usage``; stop soon after ``cancel.cancelled``."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` takes in this model's tokenizer."""

    def message_overhead_tokens(self) -> int:
        """Tokens the chat template adds around each message (role markers, separators)."""
        return 4

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the adapter holds."""


class _StallTimer:
    """Fails the task waiting for a model's next token after ``timeout_s`` without one. One timer
    per generation: per token it costs two attribute writes (a per-token ``asyncio.timeout`` or
    ``wait_for`` costs a timer or a task each)."""

    def __init__(self, timeout_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.timeout_s = timeout_s
        self.waiting_since: float | None = None
        self.fired = False
        self._handle = self.loop.call_later(timeout_s, self._check)

    def _check(self) -> None:
        since = self.waiting_since
        now = self.loop.time()
        if since is not None and now - since >= self.timeout_s:
            self.fired = True
            self.task.cancel()
            return
        self._handle = self.loop.call_at((since or now) + self.timeout_s, self._check)

    def close(self) -> None:
        self._handle.cancel()


async def _empty() -> AsyncIterator[str]:
    return
    yield  # pragma: no cover


async def _aclose(iterator: object) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def iterate_in_thread(
    produce: Callable[[], Iterator[str]], cancel: CancelToken, *, max_pending: int = 256
) -> AsyncIterator[str]:
    """Run a blocking generator in a worker thread and yield what it produces on the event loop.

    The blocking side checks ``cancel`` between items; leaving the ``async for`` early cancels it.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue(max_pending)

    def put(kind: str, value: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def run() -> None:
        try:
            for item in produce():
                put("item", item)
                if cancel.cancelled:
                    break
            put("end", None)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop
            put("error", exc)

    worker = loop.run_in_executor(None, run)
    try:
        while True:
            kind, value = await queue.get()
            if kind == "item":
                yield value  # type: ignore[misc]
            elif kind == "end":
                break
            else:
                raise value  # type: ignore[misc]
    finally:
        cancel.cancel()
        await asyncio.shield(worker)


# --------------------------------------------------------------------------------------------------
# Speech to text and voice activity (audio is float32 mono at 16 kHz, in [-1, 1])
# --------------------------------------------------------------------------------------------------

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None = None
    duration_s: float = 0.0  # of the audio transcribed


@dataclass(frozen=True)
class SpeechToTextCapabilities:
    languages: tuple[str, ...] | None = None  # None: multilingual
    #: Longest audio one call takes; longer audio is refused by the port.
    max_audio_s: float = 600.0


class SpeechToText(abc.ABC):
    """Transcribes a whole utterance. Streaming partials are built on top by re-transcribing the
    growing buffer (see the voice pipeline), so adapters only implement one blocking call."""

    name: str = "speech_to_text"
    capabilities: SpeechToTextCapabilities = SpeechToTextCapabilities()
    timeout_s: float = 120.0

    async def transcribe(
        self, audio: "np.ndarray", *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        """``audio``: float32 samples, mono, 16 kHz. Runs off the event loop."""
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._transcribe_impl, audio, language, prompt), self.timeout_s
            )
        except asyncio.TimeoutError as exc:
            raise ModelTimeoutError(f"{self.name}: no transcript within {self.timeout_s:.0f} s") from exc
        except AssistantError:
            raise
        except Exception as exc:
            raise ModelError(f"{self.name} failed: {exc}") from exc

    @abc.abstractmethod
    def _transcribe_impl(
        self, audio: "np.ndarray", language: str | None, prompt: str | None
    ) -> Transcript:
        """Blocking: transcribe float32 16 kHz mono samples."""

    async def aclose(self) -> None:  # noqa: B027
        """Release what the adapter holds."""


class VoiceActivity(abc.ABC):
    """Speech probability per fixed window of audio (e.g. Silero VAD: 512 samples at 16 kHz).
    Stateful over a stream: ``reset()`` between streams."""

    name: str = "voice_activity"
    window_samples: int = 512

    @abc.abstractmethod
    def probabilities(self, audio: "np.ndarray") -> "np.ndarray":
        """Blocking: one probability in [0, 1] per whole window of ``audio`` (float32, 16 kHz);
        a trailing partial window is kept for the next call."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget the stream's state."""


# --------------------------------------------------------------------------------------------------
# Text to speech (spoken replies): float32 mono at 16 kHz out, like the audio in
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextToSpeechCapabilities:
    sample_rate: int = SAMPLE_RATE  # of what ``synthesize`` returns
    #: Longest text one call takes; the spoken-reply streamer sends a sentence at a time.
    max_text_chars: int = 2_000
    #: Voice names a session may ask for; None: not listed.
    voices: tuple[str, ...] | None = None


class TextToSpeech(abc.ABC):
    """Speaks a piece of text (a sentence of a reply). One blocking call per piece; streaming is
    built on top, sentence by sentence."""

    name: str = "text_to_speech"
    capabilities: TextToSpeechCapabilities = TextToSpeechCapabilities()
    timeout_s: float = 30.0

    async def synthesize(self, text: str, *, voice: str | None = None) -> "np.ndarray":
        """float32 samples (N,), mono, at ``capabilities.sample_rate``. Runs off the event loop."""
        text = text[: self.capabilities.max_text_chars]
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._synthesize_impl, text, voice), self.timeout_s
            )
        except asyncio.TimeoutError as exc:
            raise ModelTimeoutError(f"{self.name}: no speech within {self.timeout_s:.0f} s") from exc
        except AssistantError:
            raise
        except Exception as exc:
            raise ModelError(f"{self.name} failed: {exc}") from exc

    @abc.abstractmethod
    def _synthesize_impl(self, text: str, voice: str | None) -> "np.ndarray":
        """Blocking: speak ``text`` with ``voice`` (None: the adapter's default)."""

    async def aclose(self) -> None:  # noqa: B027
        """Release what the adapter holds."""


# --------------------------------------------------------------------------------------------------
# Vision
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFeatures:
    patches: "np.ndarray"  # (N, D) float32: N patch features of D dims
    class_probs: "np.ndarray | None" = None  # (C,) float32 posterior, when the encoder classifies
    class_names: tuple[str, ...] | None = None  # (C,) names of the classes


@dataclass(frozen=True)
class VisionEncoderCapabilities:
    feature_dim: int
    patches: int
    class_scores: bool = False
    image_size: int = 224


class ImageProjector(abc.ABC):
    """Maps an encoder's features to embeddings in a language model's input space."""

    #: Names the projector's type, configuration and weights: the embedding cache's key.
    identity: str

    @abc.abstractmethod
    def project(self, features: ImageFeatures) -> "np.ndarray":
        """Blocking: (N, H) float32 embeddings for one image."""


class VisionEncoder(abc.ABC):
    """Turns a decoded RGB image into patch features (and class scores, where it has them)."""

    name: str = "vision_encoder"
    capabilities: VisionEncoderCapabilities
    timeout_s: float = 60.0

    async def encode(self, image: "np.ndarray") -> ImageFeatures:
        """``image``: uint8 RGB, shape (H, W, 3). Runs off the event loop."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._encode_impl, image), self.timeout_s)
        except asyncio.TimeoutError as exc:
            raise ModelTimeoutError(f"{self.name}: no features within {self.timeout_s:.0f} s") from exc
        except AssistantError:
            raise
        except Exception as exc:
            raise ModelError(f"{self.name} failed: {exc}") from exc

    @abc.abstractmethod
    def _encode_impl(self, image: "np.ndarray") -> ImageFeatures:
        """Blocking: encode one uint8 RGB (H, W, 3) image."""


# --------------------------------------------------------------------------------------------------
# Session memory
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendResult:
    message: Message
    created: bool  # False when the turn id was seen before: the stored message is returned


@dataclass(frozen=True)
class SessionSnapshot:
    info: SessionInfo
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class TurnStart:
    """What ``begin_turn`` returns: the stored user message (if one was given) and the history."""

    appended: AppendResult | None
    snapshot: SessionSnapshot


class SessionLock(abc.ABC):
    """A short exclusive hold on one session, released on exit; kept alive while held."""

    @abc.abstractmethod
    async def __aenter__(self) -> "SessionLock": ...

    @abc.abstractmethod
    async def __aexit__(self, *exc: object) -> None: ...


class SessionStore(abc.ABC):
    """Where sessions live. Every read and write refreshes the session's time to live."""

    name: str = "session_store"

    async def create(self, info: SessionInfo) -> SessionInfo:
        return await self._call(self._create_impl(info))

    async def load(self, session_id: str, *, last: int | None = None) -> SessionSnapshot | None:
        """The session and its messages (the ``last`` N only, when given); None if unknown."""
        return await self._call(self._load_impl(session_id, last))

    async def update_info(self, session_id: str, **fields: object) -> SessionInfo:
        return await self._call(self._update_info_impl(session_id, fields))

    async def append(self, session_id: str, message: Message) -> AppendResult:
        """Append a message; a message whose ``turn_id`` was stored before is not stored again."""
        return await self._call(self._append_impl(session_id, message))

    def lock(self, session_id: str, *, wait_s: float = 0.0) -> SessionLock:
        """An exclusive writer lock on a session; raises ``SessionBusyError`` when not had in time."""
        return self._lock_impl(session_id, wait_s)

    # -- turns: the hot path, one round trip at each end -------------------------------------------

    async def begin_turn(
        self,
        session_id: str,
        token: str,
        *,
        message: Message | None = None,
        last: int | None = None,
        wait_s: float = 0.0,
    ) -> TurnStart:
        """In one round trip: take (or keep) the session's writer lease for ``token``, append
        ``message`` (idempotent on its turn id) and return the history (the ``last`` N messages).
        Waits up to ``wait_s`` while another token holds the lease, then ``SessionBusyError``."""
        deadline = time.monotonic() + max(wait_s, 0.0)
        pause = 0.02
        while True:
            started = await self._call(self._begin_turn_impl(session_id, token, message, last))
            if started is not None:
                return started
            left = deadline - time.monotonic()
            if left <= 0:
                raise SessionBusyError(f"session {session_id!r} is busy (another writer)")
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.2)

    async def end_turn(
        self, session_id: str, token: str, message: Message | None = None
    ) -> AppendResult | None:
        """In one round trip: append ``message`` (the reply) and release ``token``'s lease."""
        return await self._call(self._end_turn_impl(session_id, token, message))

    async def renew_turn(self, session_id: str, token: str) -> bool:
        """Extend ``token``'s lease; False when it is no longer held by ``token``."""
        return await self._call(self._renew_turn_impl(session_id, token))

    # -- content-addressed blobs and a derived-data cache, shared by a tenant's sessions ----------

    async def put_blob(self, sha256: str, data: bytes) -> None:
        """Store bytes under their sha256 (images); they live as long as a session would."""
        await self._call(self._put_blob_impl(sha256, data))

    async def get_blob(self, sha256: str) -> bytes | None:
        """The bytes stored under ``sha256`` (their time to live refreshed), or None."""
        return await self._call(self._get_blob_impl(sha256))

    async def cache_get(self, key: str) -> bytes | None:
        """Derived data (image embeddings) by key; None on a miss."""
        return await self._call(self._cache_get_impl(key))

    async def cache_set(self, key: str, value: bytes, ttl_s: int) -> None:
        await self._call(self._cache_set_impl(key, value, ttl_s))

    async def ping(self) -> bool:
        try:
            return await self._call(self._ping_impl())
        except StoreError:
            return False

    async def aclose(self) -> None:  # noqa: B027
        """Release connections."""

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        try:
            return await awaitable
        except AssistantError:
            raise
        except (ConnectionError, OSError, TimeoutError) as exc:
            raise StoreError(f"{self.name}: {exc}") from exc

    @abc.abstractmethod
    async def _create_impl(self, info: SessionInfo) -> SessionInfo: ...

    @abc.abstractmethod
    async def _load_impl(self, session_id: str, last: int | None) -> SessionSnapshot | None: ...

    @abc.abstractmethod
    async def _update_info_impl(self, session_id: str, fields: dict[str, object]) -> SessionInfo: ...

    @abc.abstractmethod
    async def _append_impl(self, session_id: str, message: Message) -> AppendResult: ...

    @abc.abstractmethod
    def _lock_impl(self, session_id: str, wait_s: float) -> SessionLock: ...

    @abc.abstractmethod
    async def _ping_impl(self) -> bool: ...

    @abc.abstractmethod
    async def _begin_turn_impl(
        self, session_id: str, token: str, message: Message | None, last: int | None
    ) -> TurnStart | None:
        """None when another token holds the lease. ``SessionNotFoundError`` for an unknown id."""

    @abc.abstractmethod
    async def _end_turn_impl(
        self, session_id: str, token: str, message: Message | None
    ) -> AppendResult | None: ...

    @abc.abstractmethod
    async def _renew_turn_impl(self, session_id: str, token: str) -> bool: ...

    @abc.abstractmethod
    async def _put_blob_impl(self, sha256: str, data: bytes) -> None: ...

    @abc.abstractmethod
    async def _get_blob_impl(self, sha256: str) -> bytes | None: ...

    @abc.abstractmethod
    async def _cache_get_impl(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def _cache_set_impl(self, key: str, value: bytes, ttl_s: int) -> None: ...


__all__ = [
    "AppendResult",
    "CancelToken",
    "Generation",
    "GenerationOptions",
    "LanguageModel",
    "LanguageModelCapabilities",
    "MessageStatus",
    "IMAGE_MARKER",
    "ImageProjector",
    "Prompt",
    "PromptImage",
    "PromptMessage",
    "SessionLock",
    "SessionSnapshot",
    "SessionStore",
    "TurnStart",
    "Usage",
    "iterate_in_thread",
]
