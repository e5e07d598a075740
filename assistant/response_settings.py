"""What a response gets where its request says nothing: ``ResponseOverrides`` (the client's
per-response settings) over ``ResponseSettings`` (the server's: the system prompt, the prompt's
token budget and the model's generation options, from the ``llm`` and ``prompt`` settings and the
model's context). The orchestrator's turns and the stateless completions use both."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.config import LLMSettings, PromptSettings
from assistant.ports import GenerationOptions, LanguageModel
from assistant.prompt import PromptBudget


@dataclass(frozen=True)
class ResponseOverrides:
    """Per-response settings from the client; ``None`` keeps the session's or server's value."""

    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    #: Stop strings: the reply ends before the first of them (``GenerationOptions.stop``).
    stop: tuple[str, ...] = ()


class ResponseSettings:
    def __init__(
        self, llm: LanguageModel, llm_settings: LLMSettings, prompt_settings: PromptSettings
    ) -> None:
        self.llm = llm
        self.llm_settings = llm_settings
        self.prompt_settings = prompt_settings

    @property
    def instructions(self) -> str:
        """The system prompt of a response whose session and request set none."""
        return self.prompt_settings.instructions

    def budget(self, overrides: ResponseOverrides) -> PromptBudget:
        """What a prompt may take: the configured context, else the model's minus the reply."""
        max_new = overrides.max_output_tokens or self.llm_settings.max_new_tokens
        context = self.prompt_settings.context_tokens or (
            self.llm.capabilities.context_tokens - max_new
        )
        return PromptBudget(tokens=max(context, 1), per_message=self.llm.message_overhead_tokens())

    def options(self, overrides: ResponseOverrides) -> GenerationOptions:
        """The model's options for a response: the overrides, else the server's settings."""
        llm = self.llm_settings
        return GenerationOptions(
            max_new_tokens=overrides.max_output_tokens or llm.max_new_tokens,
            temperature=llm.temperature if overrides.temperature is None else overrides.temperature,
            top_p=llm.top_p if overrides.top_p is None else overrides.top_p,
            stop=overrides.stop,
        )
