"""Builders keyed by name: the configured adapter is imported lazily, and an unknown name fails
loudly with the list of known ones. Each adapter module exposes ``build(settings, **runtime)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from assistant.config import Settings
from assistant.errors import MissingDependencyError, UnknownAdapterError
from assistant.ports import (
    LanguageModel,
    SessionStore,
    SpeechToText,
    TextToSpeech,
    VisionEncoder,
    VoiceActivity,
)

LLM_ADAPTERS: dict[str, str] = {
    "transformers_local": "adapters.llm.transformers_local",
    "transformers_vlm": "adapters.llm.transformers_vlm",
    "openai_compatible": "adapters.llm.openai_compatible",
    #: Any LangChain chat model; ``ASSISTANT_LLM__MODEL`` is its import path ``pkg.module:attr``.
    "langchain": "adapters.langchain.language_model",
    "scripted": "assistant.testing.language_models",
}
MEMORY_ADAPTERS: dict[str, str] = {
    "redis": "adapters.memory.redis",
}
#: Keys and limits live where the sessions do: keyed by the memory adapter's name.
KEY_ADAPTERS: dict[str, str] = {
    "redis": "adapters.memory.redis_keys",
}
LIMIT_ADAPTERS: dict[str, str] = {
    "redis": "adapters.limits.redis_limits",
}
ASR_ADAPTERS: dict[str, str] = {
    "faster_whisper": "adapters.asr.faster_whisper",
    "transformers_whisper": "adapters.asr.transformers_whisper",
    "openai_whisper": "adapters.asr.openai_whisper",
}
VAD_ADAPTERS: dict[str, str] = {
    "silero": "adapters.asr.silero_vad",
}
TTS_ADAPTERS: dict[str, str] = {
    "espeak": "adapters.tts.espeak",
}
EMBEDDER_ADAPTERS: dict[str, str] = {
    "minilm": "adapters.knowledge.minilm",
}
#: Knowledge bases live where the sessions do: keyed by the memory adapter's name.
KNOWLEDGE_ADAPTERS: dict[str, str] = {
    "redis": "adapters.knowledge.redis_store",
}
#: Webhook subscriptions and their delivery queue live where the sessions do.
WEBHOOK_ADAPTERS: dict[str, str] = {
    "redis": "adapters.webhooks.redis_queue",
}
CONVERSATION_ADAPTERS: dict[str, str] = {
    "redis": "adapters.memory.redis_conversations",
}
VISION_ADAPTERS: dict[str, str] = {
    "efficientnet": "adapters.vision.efficientnet",
    "hf_vision": "adapters.vision.hf_vision",
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


def build_speech_to_text(settings: Settings) -> SpeechToText:
    return _module("asr", ASR_ADAPTERS, settings.asr.adapter).build(settings)


def build_voice_activity(settings: Settings) -> VoiceActivity:
    return _module("vad", VAD_ADAPTERS, settings.asr.vad_adapter).build(settings)


def build_text_to_speech(settings: Settings) -> TextToSpeech:
    return _module("tts", TTS_ADAPTERS, settings.tts.adapter).build(settings)


def build_vision_encoder(settings: Settings) -> VisionEncoder:
    return _module("vision", VISION_ADAPTERS, settings.vision.adapter).build(settings)


def build_image_pipeline(settings: Settings, llm: LanguageModel, store: SessionStore) -> Any:
    """The vision encoder, and a projector when the language model takes embeddings, behind the
    core's ``ImagePipeline`` (blocking: loads weights). A model that takes images itself gets
    their pixels and needs no encoder: none is built (a gateway in front of a remote vision model
    loads no torch)."""
    from assistant.vision.images import ImageLimits
    from assistant.vision.pipeline import ImagePipeline

    encoder = None if llm.capabilities.images else build_vision_encoder(settings)
    projector = None
    if encoder is not None and llm.capabilities.embeddings:
        module = importlib.import_module("adapters.vision.projector")
        projector = module.build(
            settings, encoder=encoder.capabilities, table=llm.input_embeddings
        )
    limits = ImageLimits(
        max_bytes=settings.vision.max_image_bytes, max_pixels=settings.vision.max_image_pixels
    )
    return ImagePipeline(
        encoder, projector, store, limits=limits, top_k=settings.vision.top_k,
        decode_concurrency=settings.vision.decode_concurrency,
    )  # fmt: skip


def build_knowledge_store(settings: Settings, *, redis_url: str) -> Any:
    """The knowledge bases' and bot profiles' store (``ports.retrieval.KnowledgeStore``), beside
    the sessions; cheap (a client, not yet connected)."""
    module = _module("knowledge", KNOWLEDGE_ADAPTERS, settings.memory.adapter)
    return module.build(settings, redis_url=redis_url)


def build_knowledge(settings: Settings, *, redis_url: str, store: Any = None) -> Any:
    """The knowledge bases (``assistant.knowledge.service.KnowledgeService``): the store beside
    the sessions (``store``, else a new one), the configured embedder (loaded on its first use),
    the document reader, and the embedded retriever over them. Close it with
    ``await service.store.aclose()``."""
    from assistant.knowledge.retriever import EmbeddedRetriever, LazyEmbedder
    from assistant.knowledge.service import KnowledgeService

    store = store or build_knowledge_store(settings, redis_url=redis_url)
    name = settings.knowledge.embedder
    if name not in EMBEDDER_ADAPTERS:
        _module("embedder", EMBEDDER_ADAPTERS, name)  # unknown_adapter, now
    # The embedder's module (torch, transformers) is imported when something is first embedded.
    embedder = LazyEmbedder(lambda: _module("embedder", EMBEDDER_ADAPTERS, name).build(settings))
    reader = _module("reader", {"default": "adapters.knowledge.reader"}, "default").build(settings)
    retriever = EmbeddedRetriever(
        store, embedder, semantic_weight=settings.knowledge.semantic_weight
    )
    return KnowledgeService(store, embedder, reader, retriever, settings.knowledge)


def build_session_store(settings: Settings, *, redis_url: str) -> SessionStore:
    return _module("memory", MEMORY_ADAPTERS, settings.memory.adapter).build(settings, redis_url=redis_url)


def build_key_store(settings: Settings, store: SessionStore) -> Any:
    """API keys beside the sessions, in the session store's backend."""
    return _module("keys", KEY_ADAPTERS, settings.memory.adapter).build(store, settings)


def build_conversations(settings: Settings, store: SessionStore) -> Any:
    """The handoff states and session event streams, beside the sessions (``ConversationStore``)."""
    adapter = settings.memory.adapter
    return _module("conversations", CONVERSATION_ADAPTERS, adapter).build(store, settings)


def build_limiter(settings: Settings, store: SessionStore, *, redis_url: str) -> Any:
    """Per-key limits shared by every worker, in the session store's backend."""
    module = _module("limits", LIMIT_ADAPTERS, settings.memory.adapter)
    return module.build(store, settings, redis_url=redis_url)


def start_embedded_redis(settings: Settings) -> Any:
    """Start a private ``redis-server`` on loopback with its data under the data dir (AOF on),
    supervised: started again when it dies. Returns it running; its ``url`` is what the store
    connects to, ``stop()`` ends it (also when the start is interrupted, e.g. by a signal)."""
    embedded = importlib.import_module("adapters.memory.embedded_redis")
    supervisor = importlib.import_module("adapters.memory.redis_supervisor")
    memory = settings.memory
    server = supervisor.RedisSupervisor(
        embedded.EmbeddedRedis(settings.redis_dir, appendfsync=memory.embedded_appendfsync),
        max_backoff_s=memory.embedded_restart_max_backoff_s,
    )
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


def train_projector(
    settings: Settings, *, images: str, captions: str, out: str, **config: Any
) -> Any:
    """``assistant train-projector``: train a projector on image-caption pairs with the configured
    models (``adapters.vision.train``, which needs torch); ``config`` holds ``TrainConfig`` fields.
    Returns the training result (``steps``, ``pairs``, ``images``, ``initial_loss``, ...)."""
    module = importlib.import_module("adapters.vision.train")
    return module.run(settings, images, captions, out, module.TrainConfig(**config))


#: Prepared by ``prepare-models`` beside the configured adapters (when installed): (settings
#: section, table, adapter name).
ALSO_PREPARED: tuple[tuple[str, dict[str, str], str], ...] = (("asr", ASR_ADAPTERS, "openai_whisper"),)


def prepare_models(
    settings: Settings, *, progress: bool = True, also: bool = True
) -> list[str]:
    """Prepare what the configured adapters need on disk (once; later calls return at once).
    Each adapter module may define ``prepare(settings, progress=...) -> list[str]`` (lines to show).
    ``also``: ``ALSO_PREPARED`` too (``prepare-models``; ``serve`` prepares only what it runs)."""
    lines: list[str] = []
    modules = [
        _module("llm", LLM_ADAPTERS, settings.llm.adapter),
        _module("asr", ASR_ADAPTERS, settings.asr.adapter),
    ]
    # Also what switching adapters by one setting needs offline, when its package is installed:
    # the openai-whisper checkpoint (written from the bundled tiny.en in about a second).
    for kind, table, name in ALSO_PREPARED if also else ():
        if name != getattr(getattr(settings, kind), "adapter"):
            try:
                modules.append(_module(kind, table, name))
            except MissingDependencyError:
                continue
    for module in modules:
        prepare = getattr(module, "prepare", None)
        if prepare is not None:
            lines.extend(prepare(settings, progress=progress))
    return lines


def build_webhooks(settings: Settings, store: SessionStore) -> Any:
    """``(Webhooks, DeliveryWorker)``: the store beside the sessions, in the session store's
    backend, and the worker sending its deliveries over httpx (not started)."""
    from assistant.webhooks.service import Webhooks
    from assistant.webhooks.worker import DeliveryWorker

    queue = _module("webhooks", WEBHOOK_ADAPTERS, settings.memory.adapter).build(store, settings)
    sender = _module("webhook sender", {"httpx": "adapters.webhooks.http_sender"}, "httpx")
    webhooks = Webhooks(queue, settings.webhooks)
    return webhooks, DeliveryWorker(queue, sender.build(settings), settings.webhooks)
