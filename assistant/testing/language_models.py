"""Language models that need no weights. ``ScriptedLM`` (the ``scripted`` adapter) answers with a
fixed reply, or echoes the last user message, one word per token, optionally slowed down: for
benchmarks of the gateway ("an instant model"), demos without a model, and tests of everything
around the model. ``DeltasLM`` yields given deltas as they are; ``FailingLM`` fails mid-reply."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Sequence

from assistant.config import Settings
from assistant.ports import (
    CancelToken,
    GenerationOptions,
    LanguageModel,
    LanguageModelCapabilities,
    Prompt,
    Usage,
)


class ScriptedLM(LanguageModel):
    name = "scripted"

    def __init__(self, reply: str | None = None, *, token_delay_s: float = 0.0) -> None:
        self.reply = reply
        self.token_delay_s = token_delay_s
        self.capabilities = LanguageModelCapabilities(context_tokens=4096)
        self.prompts: list[Prompt] = []  # what it was asked, newest last (bounded)
        # "Instant" includes counting the prompt: each history message is counted once.
        self._count = functools.lru_cache(maxsize=16_384)(self.count_tokens)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def message_overhead_tokens(self) -> int:
        return 1

    def reply_for(self, prompt: Prompt) -> str:
        if self.reply is not None:
            return self.reply
        last_user = next((m.text for m in reversed(prompt.messages) if m.role == "user"), "")
        return f"You said: {last_user}"

    async def _stream_impl(
        self, prompt: Prompt, options: GenerationOptions, cancel: CancelToken, usage: Usage
    ) -> AsyncIterator[str]:
        self.prompts = [*self.prompts[-15:], prompt]
        usage.input_tokens = sum(self._count(m.text) + 1 for m in prompt.messages)
        words = self.reply_for(prompt).split(" ")
        for index, word in enumerate(words[: options.max_new_tokens]):
            if cancel.cancelled:
                return
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            usage.output_tokens += 1
            yield word if index == 0 else f" {word}"


class DeltasLM(LanguageModel):
    """Yields the given deltas as they are, one token each: a stream split exactly so, for tests
    of what the port does with it whatever the split (stop strings)."""

    name = "deltas"

    def __init__(self, deltas: Sequence[str]) -> None:
        self.deltas = list(deltas)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def _stream_impl(
        self, prompt: Prompt, options: GenerationOptions, cancel: CancelToken, usage: Usage
    ) -> AsyncIterator[str]:
        for delta in self.deltas[: options.max_new_tokens]:
            if cancel.cancelled:
                return
            usage.output_tokens += 1
            yield delta


class GatedLM(ScriptedLM):
    """A ``ScriptedLM`` that yields its first word, then waits until ``release`` is set: a test
    sees a delta arrive while the model is still generating. ``closed`` is set once the
    generation has ended (run out, cancelled or closed), from any thread."""

    name = "gated"

    def __init__(self, reply: str | None = None) -> None:
        super().__init__(reply)
        self.release = threading.Event()
        self.closed = threading.Event()

    async def _stream_impl(
        self, prompt: Prompt, options: GenerationOptions, cancel: CancelToken, usage: Usage
    ) -> AsyncIterator[str]:
        words = super()._stream_impl(prompt, options, cancel, usage)
        try:
            first = True
            async for word in words:
                yield word
                while first and not self.release.is_set() and not cancel.cancelled:
                    await asyncio.sleep(0.005)  # the poll interval of a test's gate
                first = False
        finally:
            await words.aclose()
            self.closed.set()


class FailingLM(LanguageModel):
    """Yields ``good`` deltas, then raises."""

    name = "failing"

    def __init__(self, good: int = 2) -> None:
        self.good = good

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def _stream_impl(
        self, prompt: Prompt, options: GenerationOptions, cancel: CancelToken, usage: Usage
    ) -> AsyncIterator[str]:
        for index in range(self.good):
            usage.output_tokens += 1
            yield f"w{index} "
        raise RuntimeError("the model fell over")


def build(settings: Settings) -> ScriptedLM:
    """``ASSISTANT_LLM__MODEL`` is the fixed reply; empty means echo the user.
    ``ASSISTANT_LLM__TOKEN_DELAY_S`` slows it down (seconds before each token)."""
    return ScriptedLM(settings.llm.model or None, token_delay_s=settings.llm.token_delay_s)
