"""Builders keyed by name: the configured adapter is imported lazily, and an unknown name fails
loudly with the list of known ones. Each adapter module exposes ``build(settings, **runtime)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from assistant.config import Settings
from assistant.errors import MissingDependencyError, UnknownAdapterError
from assistant.ports import LanguageModel, SessionStore

LLM_ADAPTERS: dict[str, str] = {
    "transformers_local": "adapters.llm.transformers_local",
    "scripted": "adapters.llm.scripted",
}
MEMORY_ADAPTERS: dict[str, str] = {
    "redis": "adapters.memory.redis",
}


def _module(kind: str, table: dict[str, str], name: str) -> Any:
    try:
        path = table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise UnknownAdapterError(f"unknown {kind} adapter {name!r}; known: {known}") from None
    try:
        return importlib.import_module(path)
    except ImportError as exc:  # the adapter's message names the extra to install
        raise MissingDependencyError(f"{kind} adapter {name!r} cannot be imported: {exc}") from exc


def build_language_model(settings: Settings) -> LanguageModel:
    return _module("llm", LLM_ADAPTERS, settings.llm.adapter).build(settings)


def build_session_store(settings: Settings, *, redis_url: str) -> SessionStore:
    return _module("memory", MEMORY_ADAPTERS, settings.memory.adapter).build(settings, redis_url=redis_url)
