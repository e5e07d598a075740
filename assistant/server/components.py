"""What the app is made of, built once by its lifespan: the configured adapters (or those handed
in, as tests do), the orchestrator, speech, and auth (keys, the authenticator, limits)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.auth.authenticator import Authenticator, parse_static_keys
from assistant.auth.secret import server_secret
from assistant.completions import Completions
from assistant.config import Settings
from assistant.errors import ConfigurationError
from assistant.handoff.runtime import HandoffRuntime
from assistant.knowledge.answer import BotProfile
from assistant.knowledge.grounder import Grounder
from assistant.orchestrator import Orchestrator
from assistant.ports import LanguageModel, SessionStore, SpeechToText, TextToSpeech, VoiceActivity
from assistant.ports.keys import KeyStore
from assistant.ports.limits import Limiter
from assistant.ports.retrieval import Retriever
from assistant.registry import (
    build_image_pipeline,
    build_key_store,
    build_knowledge,
    build_knowledge_store,
    build_language_model,
    build_limiter,
    build_session_store,
)
from assistant.server.limits import KeyLimits
from assistant.voice.models import SpeechModels
from assistant.webhooks.service import Webhooks

if TYPE_CHECKING:
    from assistant.knowledge.service import KnowledgeService

log = logging.getLogger(__name__)


@dataclass
class Components:
    llm: LanguageModel
    store: SessionStore
    orchestrator: Orchestrator
    keys: KeyStore
    auth: Authenticator
    limits: KeyLimits
    #: speech to text, VAD and text to speech, built on first use (None: no voice)
    speech: SpeechModels | None = None
    #: chat completions (``/v1/chat/completions``, stateless or tied to a session)
    completions: Completions | None = None
    #: webhook subscriptions and ``publish`` (``/v1/webhooks``); None without Redis
    webhooks: Webhooks | None = None
    #: the knowledge bases and bot profiles (``/v1/knowledge``, ``/v1/bot/profile``)
    knowledge: LazyKnowledge | None = None
    #: human handoff and the sessions' event streams (``/v1/conversations``, the realtime feed)
    handoff: HandoffRuntime | None = None


@dataclass
class Injected:
    """Adapters handed to ``create_app`` (used as they are, not closed by the app)."""

    llm: LanguageModel | None = None
    store: SessionStore | None = None
    stt: SpeechToText | None = None
    vad: VoiceActivity | None = None
    tts: TextToSpeech | None = None
    keys: KeyStore | None = None
    limiter: Limiter | None = None


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_mode(settings: Settings) -> bool:
    """Anonymous callers allowed: as configured, else only on a loopback bind."""
    configured = settings.auth.open
    return is_loopback_host(settings.server.host) if configured is None else configured


async def build_components(
    settings: Settings, given: Injected, stack: contextlib.AsyncExitStack
) -> Components:
    store = given.store
    if store is None:
        if not settings.redis_url:
            # One place starts the private redis-server: ``assistant serve``, before any worker.
            raise ConfigurationError(
                "no Redis configured: set ASSISTANT_REDIS_URL=redis://host:port/db, or run "
                "`assistant serve`, which starts a private redis-server when none is set"
            )
        store = build_session_store(settings, redis_url=settings.redis_url)
        stack.push_async_callback(store.aclose)
    llm = given.llm
    if llm is None:
        llm = await asyncio.to_thread(build_language_model, settings)
        stack.push_async_callback(llm.aclose)
    vision_factory = None
    if settings.vision.enabled:
        vision_factory = functools.partial(build_image_pipeline, settings, llm, store)
    knowledge = LazyKnowledge(settings)
    stack.push_async_callback(knowledge.aclose)
    orchestrator = Orchestrator(
        llm, store, llm_settings=settings.llm, prompt_settings=settings.prompt,
        memory_settings=settings.memory, vision_factory=vision_factory,
        grounder=knowledge.grounder() if given.store is None else None,
    )  # fmt: skip
    keys, limiter = _auth_stores(settings, given, store)
    limits = KeyLimits(limiter, settings.limits)
    stack.push_async_callback(limits.aclose)
    speech = await _speech(settings, given, stack)
    return Components(
        llm=llm, store=store, orchestrator=orchestrator, keys=keys,
        auth=_authenticator(settings, keys), limits=limits, speech=speech,
        completions=Completions(orchestrator, speech=speech), knowledge=knowledge,
    )  # fmt: skip


class LazyKnowledge:
    """The process's one knowledge service (``registry.build_knowledge``), built on its first use:
    a server that never touches a knowledge base imports neither torch nor the readers'
    libraries, and the embedding model loads only when something is first embedded."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._service: KnowledgeService | None = None
        self._lock = asyncio.Lock()
        #: The profiles' and knowledge bases' store: a client, connected on first use.
        #: None without Redis, or behind a Sentinel or Cluster URL (the knowledge store speaks
        #: plain ``redis://`` only, for now: no knowledge bases, every turn the plain assistant's).
        url = settings.redis_url
        plain = url.split("://", 1)[0] in ("redis", "rediss", "unix")
        self.store = build_knowledge_store(settings, redis_url=url) if url and plain else None

    def grounder(self) -> Grounder | None:
        """The support bot's turns: the tenant's profile from the store, searched with the
        service's retriever (built on the first turn that searches). None without Redis."""
        if self.store is None:
            return None

        async def retriever() -> Retriever:
            return (await self.service()).retriever

        knowledge = self._settings.knowledge
        return Grounder(
            self.store, retriever, BotProfile.from_settings(self._settings.bot),
            top_k=knowledge.top_k, profile_cache_s=knowledge.profile_cache_s,
        )  # fmt: skip

    async def service(self) -> KnowledgeService:
        if self._service is None:
            async with self._lock:
                if self._service is None:
                    if self.store is None:
                        raise ConfigurationError(
                            "knowledge bases need a plain Redis URL (redis://, rediss:// or "
                            "unix://) in ASSISTANT_REDIS_URL; Sentinel and Cluster URLs are not "
                            "supported for them yet"
                        )
                    self._service = await asyncio.to_thread(
                        build_knowledge, self._settings, redis_url=self._settings.redis_url,
                        store=self.store,
                    )  # fmt: skip
        return self._service

    async def for_tenant(self, tenant: str) -> KnowledgeService:
        return (await self.service()).for_tenant(tenant)

    async def aclose(self) -> None:
        if self.store is not None:
            await self.store.aclose()


def _auth_stores(
    settings: Settings, given: Injected, store: SessionStore
) -> tuple[KeyStore, Limiter]:
    """Keys and limits live in the session store's Redis. A store handed in without them (a unit
    test's in-memory store) gets in-process ones."""
    if given.store is not None and (given.keys is None or given.limiter is None):
        from assistant.testing.keys import MemoryKeyStore
        from assistant.testing.limits import MemoryLimiter

        return given.keys or MemoryKeyStore(), given.limiter or MemoryLimiter()
    keys = given.keys or build_key_store(settings, store)
    limiter = given.limiter or build_limiter(settings, store, redis_url=settings.redis_url)
    return keys, limiter


def _authenticator(settings: Settings, keys: KeyStore) -> Authenticator:
    static_text = settings.api_keys
    if settings.api_keys_file:
        try:
            with open(settings.api_keys_file, encoding="utf-8") as source:
                static_text += "\n" + source.read()
        except OSError as exc:
            raise ConfigurationError(f"cannot read ASSISTANT_API_KEYS_FILE: {exc.strerror}") from exc
    try:
        static = parse_static_keys(static_text)
    except ValueError as exc:
        raise ConfigurationError(f"ASSISTANT_API_KEYS: {exc}") from None
    secret = server_secret(settings.auth.secret, settings.data_dir)
    return Authenticator(
        settings.auth, keys, secret, open_mode=open_mode(settings), static_keys=static
    )


async def _speech(
    settings: Settings, given: Injected, stack: contextlib.AsyncExitStack
) -> SpeechModels | None:
    """Voice: the models handed in are used as they are; the others are built on first use (or
    now, with ``voice.preload``) and closed when the app stops."""
    if not settings.voice.enabled:
        return None
    speech = SpeechModels(settings, stt=given.stt, vad=given.vad, tts=given.tts)
    stack.push_async_callback(speech.aclose)
    if settings.voice.preload:
        await speech.preload()
    return speech
