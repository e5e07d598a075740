"""LangChain chat models for the ``langchain`` adapter's tests, importable by path:
``ASSISTANT_LLM__ADAPTER=langchain ASSISTANT_LLM__MODEL=tests.support.langchain_models:hello``.

They are LangChain's own ``GenericFakeChatModel`` (it streams its reply word by word), one with
the option fields a real chat model has, recording what it was called with.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

HELLO = "Hello from LangChain, one word at a time."


def hello() -> GenericFakeChatModel:
    """A factory: the same reply every time."""
    return GenericFakeChatModel(messages=itertools.cycle([AIMessage(HELLO)]))


#: An instance, for an import path naming one.
HELLO_MODEL = hello()


class RecordingChatModel(GenericFakeChatModel):
    """Has ``max_tokens`` and ``temperature`` fields (the adapter binds those options), records
    each call's messages and keyword arguments, and reports usage on a last chunk."""

    max_tokens: int | None = None
    temperature: float | None = None
    calls: list[tuple[list[BaseMessage], dict[str, Any]]] = Field(default_factory=list)
    usage: dict[str, int] | None = None

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:  # fmt: skip
        self.calls.append((messages, {**kwargs, **({"stop": stop} if stop else {})}))
        yield from super()._stream(messages, stop, run_manager, **kwargs)
        if self.usage is not None:
            total = sum(self.usage.values())
            message = AIMessageChunk(content="", usage_metadata={**self.usage, "total_tokens": total})
            yield ChatGenerationChunk(message=message)


def recording(reply: str = HELLO, **fields: Any) -> RecordingChatModel:
    return RecordingChatModel(messages=itertools.cycle([AIMessage(reply)]), **fields)
