"""``AssistantChatModel``: this project as a LangChain chat model, for LCEL chains and LangGraph.

    model = AssistantChatModel(base_url="http://127.0.0.1:8000/v1")      # a running server
    model = AssistantChatModel.in_process()                              # the configured model
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | model | StrOutputParser()

Both modes are one path: LangChain messages -> a ``Prompt`` (``messages.from_langchain``) -> a
``LanguageModel`` stream -> ``AIMessageChunk`` deltas, the last chunk (``chunk_position="last"``,
empty text) carrying ``usage_metadata`` and ``response_metadata`` (``finish_reason``,
``model_name``). Remote, the language model is ``OpenAICompatibleLanguageModel`` on the server's
``/v1/chat/completions`` (images sent as ``image_url`` parts; the server's vision pipeline reads
them); in process it is the configured one, images described by the configured vision encoder
(or given as pixels to a model that takes images). Images come from ``message.content_blocks``:
standard ``image`` blocks (base64 or a data URL) and OpenAI ``image_url`` blocks with data URLs.

``_astream`` streams natively; ``_stream`` runs the same on a private event loop thread and
yields each chunk as it arrives. Leaving a stream early cancels the generation. Call options:
``stop``, and ``max_tokens`` / ``temperature`` / ``top_p`` / ``seed`` (``model.bind(...)`` or
``invoke(..., max_tokens=...)``). Tools are not supported (``bind_tools`` refuses).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

try:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.language_models import BaseChatModel
    from langchain_core.language_models.chat_models import (
        agenerate_from_stream,
        generate_from_stream,
    )
    from langchain_core.messages import AIMessageChunk, BaseMessage
    from langchain_core.outputs import ChatGenerationChunk, ChatResult
    from pydantic import Field, PrivateAttr, SecretStr, model_validator
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"AssistantChatModel needs langchain-core: pip install 'assistant[langchain]' ({exc})"
    ) from exc

from adapters.langchain.messages import from_langchain, to_domain
from assistant.config import Settings
from assistant.ports import GenerationOptions, LanguageModel
from assistant.vision.images import DEFAULT_LIMITS, ImageLimits

#: Call options taken (``bind`` / ``invoke`` kwargs), as GenerationOptions fields.
CALL_OPTIONS = {"max_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p",
                "seed": "seed"}  # fmt: skip


class _LoopThread:
    """A private event loop on a daemon thread, for the sync methods: an async generator runs
    there and its items are handed over as they come."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="assistant-chat-model",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def iterate(self, source: AsyncIterator[Any]) -> Iterator[Any]:
        handed: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()

        async def pump() -> None:
            try:
                async for item in source:
                    handed.put((True, item))
            finally:
                await source.aclose()  # type: ignore[attr-defined]

        future = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        future.add_done_callback(lambda done: handed.put((False, done)))
        try:
            while True:
                more, item = handed.get()
                if not more:
                    item.result()  # raises what the generation raised
                    return
                yield item
        finally:
            future.cancel()  # the consumer left early: the generation is cancelled and closed

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class AssistantChatModel(BaseChatModel):
    """A chat model over a running assistant server (``base_url``) or over any ``LanguageModel``
    (``language_model``; ``in_process`` builds the configured one)."""

    #: The server's OpenAI-compatible base URL, ``http://HOST:PORT/v1``.
    base_url: str | None = None
    api_key: SecretStr | None = None
    #: The model name sent to the server (it serves one; ``/v1/models`` lists it).
    model: str | None = None
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    #: The language model itself (in process; not serialised).
    language_model: Any = Field(default=None, exclude=True)
    #: Or the server's own completions (``assistant.completions.Completions``): the path of
    #: ``POST /v1/chat/completions``, images through the image pipeline (in process, a store).
    completions: Any = Field(default=None, exclude=True)
    #: ``messages.Describe``: pixels -> a text description, for a language model that takes no
    #: images (in process).
    describe_images: Any = Field(default=None, exclude=True)
    image_limits: ImageLimits = Field(default=DEFAULT_LIMITS, exclude=True)

    _remote: dict[int, tuple[asyncio.AbstractEventLoop, LanguageModel]] = PrivateAttr(default_factory=dict)
    _loop_thread: _LoopThread | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_mode(self) -> AssistantChatModel:
        given = [self.base_url, self.language_model, self.completions]
        if sum(x is not None for x in given) != 1:
            raise ValueError(
                "AssistantChatModel takes one of base_url (a server), language_model or completions"
            )
        return self

    @classmethod
    def in_process(
        cls, settings: Settings | None = None, *, store: Any = None, **fields: Any
    ) -> AssistantChatModel:
        """The configured language model (``assistant.registry``; blocking: it loads weights).
        With a session ``store``, replies take the server's own path (``assistant.completions``:
        the server's instructions when the messages bring none, the prompt budget, images through
        the image pipeline, projected for a model that takes embeddings); without one, the
        messages go to the model as they are, images described by the configured vision encoder
        (loaded on the first image) or given as pixels to a model that takes images. ``settings``
        None: read from the environment (``ASSISTANT_*``), as ``assistant serve`` does."""
        from assistant import registry

        settings = settings or Settings()
        llm = registry.build_language_model(settings)
        if store is not None:
            return cls(completions=_completions(settings, llm, store), model=settings.llm.served_name
                       or llm.name, **fields)  # fmt: skip
        vision = settings.vision
        limits = ImageLimits(max_bytes=vision.max_image_bytes, max_pixels=vision.max_image_pixels)
        describe = _EncoderDescriber(settings) if vision.enabled else None
        defaults = {"max_tokens": settings.llm.max_new_tokens, "temperature": settings.llm.temperature}
        return cls(language_model=llm, describe_images=describe, image_limits=limits,
                   **{**defaults, **fields})  # fmt: skip

    @property
    def _llm_type(self) -> str:
        return "assistant"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        mode = {"base_url": self.base_url} if self.base_url else {"in_process": self._model_name()}
        return {**mode, "model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature}

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "AssistantChatModel does not call tools: it takes system, human and ai messages with "
            "text and image content blocks and streams text (in LangGraph, call it from a "
            "StateGraph node over MessagesState)"
        )

    def _model_name(self) -> str:
        if self.model:
            return self.model
        return self.language_model.name if self.language_model is not None else "assistant"

    async def _start(self, messages: list[BaseMessage], options: GenerationOptions) -> Any:
        """A generation or a completion: both iterate deltas and end with ``usage`` and
        ``finish_reason``; ``aclose`` stops either."""
        if self.completions is not None:
            from assistant.completions import ResponseOverrides

            overrides = ResponseOverrides(
                max_output_tokens=options.max_new_tokens, temperature=options.temperature,
                top_p=options.top_p, stop=options.stop,
            )  # fmt: skip
            return await self.completions.start(to_domain(messages), overrides)
        llm = self._llm()
        prompt = await from_langchain(
            messages, pixels=llm.capabilities.images, describe=self.describe_images,
            limits=self.image_limits,
        )  # fmt: skip
        return llm.stream(prompt, options)

    def _llm(self) -> LanguageModel:
        """The language model for the running loop: the given one, or the remote adapter (one
        per event loop: its pooled connections belong to the loop they were made on)."""
        if self.language_model is not None:
            return self.language_model
        loop = asyncio.get_running_loop()
        for key, (known, _) in list(self._remote.items()):
            if known.is_closed():
                del self._remote[key]
        found = self._remote.get(id(loop))
        if found is None:
            from adapters.llm.openai_compatible import OpenAICompatibleLanguageModel

            assert self.base_url is not None
            key = self.api_key.get_secret_value() if self.api_key else None
            llm = OpenAICompatibleLanguageModel(self.base_url, key, self.model or "", image_input=True)
            found = self._remote[id(loop)] = (loop, llm)
        return found[1]

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> GenerationOptions:
        unknown = set(kwargs) - set(CALL_OPTIONS)
        if unknown:
            raise ValueError(
                f"AssistantChatModel takes no option {sorted(unknown)}; it takes stop and "
                f"{', '.join(CALL_OPTIONS)}"
            )
        values = {"max_new_tokens": self.max_tokens, "temperature": self.temperature}
        values.update({CALL_OPTIONS[k]: v for k, v in kwargs.items() if v is not None})
        if stop:
            values["stop"] = tuple(stop)
        return GenerationOptions(**values)

    async def _chunks(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AsyncIterator[ChatGenerationChunk]:
        generation = await self._start(messages, self._options(stop, kwargs))
        try:
            async for delta in generation:
                yield ChatGenerationChunk(message=AIMessageChunk(content=delta))
        finally:
            await generation.aclose()  # also when the consumer left early: the model stops
        usage = generation.usage
        last = AIMessageChunk(
            content="",
            chunk_position="last",
            usage_metadata={"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                            "total_tokens": usage.total_tokens},  # fmt: skip
            response_metadata={"finish_reason": generation.finish_reason or "stop",
                               "model_name": self._model_name()},  # fmt: skip
        )
        yield ChatGenerationChunk(message=last)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        chunks = self._chunks(messages, stop, kwargs)
        try:
            async for chunk in chunks:
                if run_manager is not None:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            await chunks.aclose()

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if self._loop_thread is None:
            self._loop_thread = _LoopThread()
        for chunk in self._loop_thread.iterate(self._chunks(messages, stop, kwargs)):
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    def close(self) -> None:
        """Stop the private loop thread of the sync methods (they start it again if called)."""
        thread, self._loop_thread = self._loop_thread, None
        if thread is not None:
            thread.stop()

    async def aclose(self) -> None:
        """Close the remote connections made on this loop (the given language model stays)."""
        loop = asyncio.get_running_loop()
        found = self._remote.pop(id(loop), None)
        if found is not None:
            await found[1].aclose()


class _EncoderDescriber:
    """The configured vision encoder's top classes for an image (``pipeline.describe_features``),
    the encoder loaded on first use, off the event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._encoder: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        from assistant import registry

        with self._lock:
            if self._encoder is None:
                self._encoder = registry.build_vision_encoder(self.settings)
        return self._encoder

    async def __call__(self, pixels: Any) -> str:
        from assistant.vision.pipeline import describe_features

        encoder = self._encoder or await asyncio.to_thread(self._load)
        return describe_features(await encoder.encode(pixels), self.settings.vision.top_k)


def _completions(settings: Settings, llm: LanguageModel, store: Any) -> Any:
    """The server's completions over ``llm`` and ``store`` (the image pipeline built on the
    first image), as ``server.components`` builds them."""
    import functools

    from assistant import registry
    from assistant.completions import Completions
    from assistant.orchestrator import Orchestrator

    vision_factory = None
    if settings.vision.enabled:
        vision_factory = functools.partial(registry.build_image_pipeline, settings, llm, store)
    orchestrator = Orchestrator(
        llm, store, llm_settings=settings.llm, prompt_settings=settings.prompt,
        memory_settings=settings.memory, vision_factory=vision_factory,
    )  # fmt: skip
    return Completions(orchestrator)
