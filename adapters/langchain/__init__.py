"""LangChain and LangGraph over this project (the ``langchain`` extra):

- ``AssistantChatModel``: a LangChain chat model over a running server's
  ``/v1/chat/completions`` or over the configured language model in process;
- ``RedisCheckpointSaver``: LangGraph persistence on plain Redis (no modules), beside the sessions;
- ``LangChainLanguageModel``: any LangChain chat model as this project's ``LanguageModel``
  (``ASSISTANT_LLM__ADAPTER=langchain``).

Importing this package imports nothing of LangChain: each name loads its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.langchain.chat_model import AssistantChatModel
    from adapters.langchain.checkpoint import RedisCheckpointSaver
    from adapters.langchain.language_model import LangChainLanguageModel

_MODULES = {
    "AssistantChatModel": "adapters.langchain.chat_model",
    "RedisCheckpointSaver": "adapters.langchain.checkpoint",
    "LangChainLanguageModel": "adapters.langchain.language_model",
}

__all__ = ["AssistantChatModel", "LangChainLanguageModel", "RedisCheckpointSaver"]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
