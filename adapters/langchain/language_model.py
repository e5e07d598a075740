"""``LangChainLanguageModel``: any LangChain chat model (``ChatOpenAI``, ``ChatOllama``,
``ChatAnthropic``, a fake one in tests) as this project's ``LanguageModel``, so the server's
turns (WebSocket, REST) can run on it.

    ASSISTANT_LLM__ADAPTER=langchain ASSISTANT_LLM__MODEL=mypkg.models:chat assistant serve

``ASSISTANT_LLM__MODEL`` is an import path ``package.module:attribute`` naming a chat model
instance, a ``LangChainLanguageModel``, or a zero-argument factory returning either.

Generation options reach the wrapped model through ``model.bind(...)``, and only those it has a
field for: ``max_new_tokens`` as ``max_tokens`` (or ``max_completion_tokens``, ``num_predict``,
``max_output_tokens``, the first the model has), ``temperature``, ``top_p`` and ``seed``; stop
strings go as the ``stop`` argument every LangChain chat model takes. A model
that takes none of them (a fake one) gets none; ``generation_kwargs`` names them explicitly
(``{"max_new_tokens": "max_tokens"}``; ``{}`` binds nothing). Usage comes from the chunks'
``usage_metadata``, else is estimated (``count_tokens``: about four characters a token; the
wrapped model's own ``get_num_tokens`` may download a tokenizer, so it is not called).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

try:
    from langchain_core.language_models import BaseChatModel
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the langchain adapter needs langchain-core: pip install 'assistant[langchain]' ({exc})"
    ) from exc

from adapters.langchain.messages import to_langchain
from assistant.config import Settings
from assistant.errors import ConfigurationError
from assistant.ports import (
    CancelToken,
    GenerationOptions,
    LanguageModel,
    LanguageModelCapabilities,
    Prompt,
    Usage,
)

#: GenerationOptions field -> the chat model fields it may go to, the first one the model has.
OPTION_FIELDS: dict[str, tuple[str, ...]] = {
    "max_new_tokens": ("max_tokens", "max_completion_tokens", "num_predict", "max_output_tokens"),
    "temperature": ("temperature",),
    "top_p": ("top_p",),
    "seed": ("seed",),
}


def estimate_tokens(text: str) -> int:
    """About four characters a token (BPE tokenizers on English text); at least one."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def detect_generation_kwargs(chat_model: Any) -> dict[str, str]:
    """The options ``chat_model`` has fields for: option name -> the model's field name."""
    fields = set(getattr(type(chat_model), "model_fields", {}))
    found = {}
    for option, names in OPTION_FIELDS.items():
        name = next((n for n in names if n in fields), None)
        if name is not None:
            found[option] = name
    return found


class LangChainLanguageModel(LanguageModel):
    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        image_input: bool = False,
        context_tokens: int | None = None,
        generation_kwargs: Mapping[str, str] | None = None,
        count_tokens: Callable[[str], int] = estimate_tokens,
        token_timeout_s: float = 120.0,
    ) -> None:
        """``image_input``: the wrapped model takes images (a VLM): prompt images go to it as
        standard image blocks; else the server describes them in text. ``context_tokens``: the
        model profile's ``max_input_tokens`` when it has one, else 4096."""
        self.chat_model = chat_model
        self.name = f"langchain:{type(chat_model).__name__}"
        profile = getattr(chat_model, "profile", None) or {}
        context = context_tokens or profile.get("max_input_tokens") or 4096
        self.capabilities = LanguageModelCapabilities(images=image_input, context_tokens=context)
        self.generation_kwargs = dict(
            detect_generation_kwargs(chat_model) if generation_kwargs is None else generation_kwargs
        )
        unknown = set(self.generation_kwargs) - set(OPTION_FIELDS)
        if unknown:
            raise ConfigurationError(
                f"generation_kwargs names no GenerationOptions field: {sorted(unknown)}; "
                f"known: {sorted(OPTION_FIELDS)}"
            )
        self._count = count_tokens
        self.token_timeout_s = token_timeout_s

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def bound(self, options: GenerationOptions) -> Any:
        """The wrapped model with the options it takes bound (itself when none)."""
        kwargs = {
            name: getattr(options, option)
            for option, name in self.generation_kwargs.items()
            if getattr(options, option) is not None
        }
        return self.chat_model.bind(**kwargs) if kwargs else self.chat_model

    async def _stream_impl(
        self, prompt: Prompt, options: GenerationOptions, cancel: CancelToken, usage: Usage
    ) -> AsyncIterator[str]:
        messages = to_langchain(prompt, image_input=self.capabilities.images)
        reported: dict[str, int] = {}
        counted = 0  # a running estimate, so that the port sees the length grow
        texts: list[str] = []
        # ``stop`` is every chat model's own parameter; the port cuts the reply there as well
        chunks = self.bound(options).astream(messages, stop=list(options.stop) or None)
        try:
            async for chunk in chunks:
                if cancel.cancelled:
                    break
                for key, value in (getattr(chunk, "usage_metadata", None) or {}).items():
                    if key in ("input_tokens", "output_tokens") and isinstance(value, int):
                        reported[key] = reported.get(key, 0) + value
                text = chunk.text if isinstance(chunk.content, (str, list)) else ""
                if text:
                    texts.append(text)
                    counted += self._count(text)
                    usage.output_tokens = max(counted, reported.get("output_tokens", 0))
                    yield str(text)
        finally:
            await chunks.aclose()  # stops the wrapped model's stream (its HTTP response)
            # also when the port stopped early (a stop string, a cancel): what was seen so far
            usage.input_tokens = reported.get("input_tokens") or sum(
                self._count(m.text) + self.message_overhead_tokens() for m in prompt.messages
            )
            usage.output_tokens = reported.get("output_tokens") or self._count("".join(texts))


def load_object(path: str) -> Any:
    """``package.module:attribute`` -> the attribute (called when it is a factory)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"ASSISTANT_LLM__MODEL for the langchain adapter is an import path "
            f"'package.module:attribute', got {path!r}"
        )
    try:
        target: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            target = getattr(target, name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot import the langchain chat model {path!r}: {exc}") from exc
    if callable(target) and not isinstance(target, (BaseChatModel, LanguageModel)):
        try:
            target = target()
        except Exception as exc:
            raise ConfigurationError(f"the factory {path!r} failed: {type(exc).__name__}: {exc}") from exc
    return target


def build(settings: Settings) -> LangChainLanguageModel:
    """The chat model ``settings.llm.model`` names (see the module's docstring)."""
    target = load_object(settings.llm.model)
    if isinstance(target, LangChainLanguageModel):
        target.token_timeout_s = settings.llm.token_timeout_s
        return target
    if not isinstance(target, BaseChatModel):
        raise ConfigurationError(
            f"{settings.llm.model!r} is a {type(target).__name__}, not a LangChain chat model "
            "(a BaseChatModel) or a LangChainLanguageModel"
        )
    return LangChainLanguageModel(target, token_timeout_s=settings.llm.token_timeout_s)


__all__ = ["LangChainLanguageModel", "build", "detect_generation_kwargs", "load_object"]
