"""The language model port: prompts in, streamed text deltas out, with cancellation."""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from assistant.errors import (
    AssistantError,
    ConfigurationError,
    ModelError,
    ModelTimeoutError,
)
from assistant.ports.stops import StopScan

if TYPE_CHECKING:
    import numpy as np


log = logging.getLogger(__name__)

PromptRole = Literal["system", "user", "assistant"]


#: Where an image's embeddings go in a prompt message's text (one marker per image, in order).
IMAGE_MARKER = "<|image|>"


@dataclass(frozen=True)
class PromptImage:
    """An image in a prompt: projected vectors for a model with the ``embeddings`` capability, or
    the decoded pixels for one with the ``images`` capability (a native vision-language model)."""

    key: str  # the image's sha256 (and projector): equal keys mean equal inputs
    embeddings: np.ndarray | None = None  # (N, H) float32, H the language model's hidden size
    pixels: np.ndarray | None = None  # (H, W, 3) uint8 RGB


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
    #: The reply ends before the first of these strings (``ports.stops``), applied by the port
    #: for every adapter; an adapter may also pass them on to a remote server.
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class LanguageModelCapabilities:
    """What a language model accepts, as data. The orchestrator picks how images reach it from this."""

    embeddings: bool = False  # accepts inputs_embeds (projected image embeddings spliced in)
    images: bool = False  # accepts images themselves (OpenAI-style image_url parts)
    context_tokens: int = 2048


@dataclass(frozen=True)
class EmbeddingTable:
    """A language model's input embeddings, as a projector needs them (the ``embeddings``
    capability): the table itself and the model's tokenizer, not the model."""

    weight: Any  # (V, H) tensor: row i is token i's input embedding
    tokenize: Callable[[str], list[int]]  # text -> token ids, no special tokens
    scale: float = 1.0  # what the model multiplies embeddings by before its first layer

    def embed(self, ids: Sequence[int]) -> Any:
        """(T, H): the embeddings the model's first layer sees for ``ids``."""
        vectors = self.weight[list(ids)]  # (T, H)
        return vectors * self.scale if self.scale != 1.0 else vectors


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class CancelToken:
    """Cancellation flag shared between the event loop and a generation thread. A plain attribute:
    one thread sets it, the other reads it, and a Python attribute store is atomic (a
    ``threading.Event`` per generation costs a lock and a condition for nothing more)."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass
class Generation:
    """A streaming generation: iterate it for text deltas; ``usage`` and ``finish_reason`` are final
    once iteration ends. ``cancel()`` stops it within one token."""

    _chunks: AsyncIterator[str] | None
    cancel_token: CancelToken
    usage: Usage = field(default_factory=Usage)
    finish_reason: FinishReason | None = None
    cancel_requested: bool = False
    first_token_s: float | None = None

    def cancel(self) -> None:
        self.cancel_requested = True
        self.cancel_token.cancel()

    def __aiter__(self) -> AsyncIterator[str]:
        assert self._chunks is not None
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

    def input_embeddings(self) -> EmbeddingTable:
        """The model's input embedding table (models with the ``embeddings`` capability)."""
        raise ConfigurationError(f"{self.name} does not take input embeddings")

    def stream(self, prompt: Prompt, options: GenerationOptions | None = None) -> Generation:
        """Start generating. Errors from the adapter surface as ``ModelError`` while iterating."""
        generation = Generation(_chunks=None, cancel_token=CancelToken())
        generation._chunks = self._guarded(generation, prompt, options or GenerationOptions())
        return generation

    async def _guarded(
        self, generation: Generation, prompt: Prompt, options: GenerationOptions
    ) -> AsyncIterator[str]:
        started = time.perf_counter()
        chunks = self._stream_impl(prompt, options, generation.cancel_token, generation.usage)
        iterator = chunks.__aiter__()
        stall = _StallTimer(self.token_timeout_s)
        stops = StopScan(options.stop) if options.stop else None
        try:
            while not generation.cancel_requested:
                stall.waiting_since = stall.loop.time()
                stall.task = asyncio.current_task() or stall.task  # the task iterating may change
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
                if stops is not None:
                    delta = stops.feed(delta)
                if delta:
                    yield delta
                if stops is not None and stops.hit:
                    break
            if stops is not None and (tail := stops.flush()):
                yield tail  # held back as the start of a stop string that did not come
        except AssistantError:
            generation.finish_reason = "error"
            raise
        except GeneratorExit:
            generation.finish_reason = "cancelled"
            raise
        except Exception as exc:  # an adapter failure gets a stable code
            generation.finish_reason = "error"
            log.warning("%s failed: %s: %s", self.name, type(exc).__name__, exc)
            raise ModelError(f"{self.name} failed ({type(exc).__name__})") from exc
        finally:
            stall.close()
            generation.cancel_token.cancel()  # stops a thread still generating after an early exit
            await _aclose(chunks)
        if stops is not None and stops.hit:
            generation.finish_reason = "stop"
        elif generation.cancel_requested:
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

    async def aclose(self) -> None:
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
