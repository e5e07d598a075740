"""A language model on a remote OpenAI-compatible server (vLLM, Ollama, llama.cpp's
``llama-server``, or another assistant server) behind the ``LanguageModel`` port.

Each generation is one streamed ``POST {base_url}/chat/completions`` (``stream: true``, usage in
the last chunk) over one pooled ``httpx.AsyncClient`` per adapter: HTTP/1.1 keep-alive, room for
many concurrent streams. Closing the generation (cancel, the consumer gone) closes its response at
once, so the remote sees the disconnect and stops generating.

- Timeouts: ``connect_timeout_s`` to connect; ``read_timeout_s`` between two chunks (the port's
  ``token_timeout_s`` too) -> ``model_timeout``.
- Retries, before the first token only (never once a token was yielded): a connection refused or
  reset, and HTTP 429 / 503, up to ``retries`` more times after 0.1 s, 0.2 s, ... (a 429 / 503's
  ``Retry-After``, in seconds, is waited instead, at most 2 s).
- Errors -> ``model_error`` naming the remote by host:port only (never the API key or a URL with
  credentials); an HTTP 4xx carries the remote's own message; a 400 about the context length is
  ``context_length_exceeded``.
- Images: with ``image_input`` the model declares the ``images`` capability and each image is sent
  as an ``image_url`` part (``openai_messages``); else the orchestrator sends descriptions.
- ``count_tokens`` is an estimate, the remote's tokenizer being out of reach (tiktoken's BPE
  files are not in its wheel: it downloads them): ASCII bytes / 4 plus other UTF-8 bytes / 2,
  rounded up (``estimate_tokens``). Against SmolLM2's small-vocabulary tokenizer it gives 0.81 of
  the true count for this project's README, 0.95 for Python code, 0.87 for Japanese; the larger
  vocabularies of the models a remote usually serves need fewer tokens. A prompt over the remote's
  context comes back as ``context_length_exceeded``; ``context_tokens`` set a little low leaves a
  margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the openai_compatible language model needs httpx ({exc}); "
        "install the extra: pip install 'assistant[remote-llm]'"
    ) from exc
import orjson

from adapters.llm.openai_messages import DataURLCache, chat_messages
from adapters.llm.openai_sse import ChunkFormatError, SSEDecoder, error_message, parse_chunk
from assistant.config import Settings
from assistant.errors import (
    ConfigurationError,
    ContextLengthError,
    ModelError,
    ModelTimeoutError,
)
from assistant.ports import (
    CancelToken,
    GenerationOptions,
    LanguageModel,
    LanguageModelCapabilities,
    Prompt,
    Usage,
)

log = logging.getLogger(__name__)

#: One adapter serves every session of a worker: room for that many streams at once.
MAX_CONNECTIONS = 1024
KEEPALIVE_CONNECTIONS = 256
KEEPALIVE_EXPIRY_S = 30.0
#: First wait before a retry (doubled each time) and the longest ``Retry-After`` honoured.
BACKOFF_S = 0.1
RETRY_AFTER_MAX_S = 2.0
RETRY_STATUSES = frozenset({429, 503})
DRAIN_S = 0.5
_ERROR_BODY_BYTES = 64 * 1024
_CONTEXT_MESSAGE = re.compile(r"context (length|size|window)", re.IGNORECASE)


class _Retryable(Exception):
    """A failure before the first token that another attempt may not meet."""

    def __init__(self, error: ModelError, wait_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait_s = wait_s


class OpenAICompatibleLanguageModel(LanguageModel):
    """Streams chat replies from ``{base_url}/chat/completions``."""

    name = "openai_compatible"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str = "",
        *,
        image_input: bool = False,
        context_tokens: int = 4096,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 120.0,
        retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = _parse_base_url(base_url)
        self.remote = _host_port(url)
        # user:password in the URL: sent as basic auth when there is no key, kept out of the URL
        auth = (url.username, url.password) if url.username and not api_key else None
        path = url.path.rstrip("/") + "/chat/completions"  # a query (Azure's api-version) stays
        self._endpoint = url.copy_with(username=None, password=None, path=path)
        self.model = model
        self.retries = max(retries, 0)
        self.token_timeout_s = read_timeout_s
        self.capabilities = LanguageModelCapabilities(
            images=image_input, context_tokens=context_tokens
        )
        self._images = DataURLCache() if image_input else None
        self._secrets = tuple(s for s in (api_key, url.password) if s)
        headers = {"accept": "text/event-stream", "accept-encoding": "identity"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            transport=transport,
            auth=auth,
            headers=headers,
            timeout=httpx.Timeout(
                connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s,
                pool=connect_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=KEEPALIVE_CONNECTIONS,
                keepalive_expiry=KEEPALIVE_EXPIRY_S,
            ),
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"OpenAICompatibleLanguageModel(remote={self.remote!r}, model={self.model!r})"

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- one generation ---------------------------------------------------------------------------

    async def _stream_impl(
        self, prompt: Prompt, options: GenerationOptions, cancel: CancelToken, usage: Usage
    ) -> AsyncIterator[str]:
        messages = await chat_messages(prompt.messages, self._images)
        usage.input_tokens = sum(
            self.count_tokens(m.text) + self.message_overhead_tokens() for m in prompt.messages
        )
        body = orjson.dumps(self._request(messages, options))
        attempt = 0
        while True:
            yielded = False
            try:
                deltas = self._attempt(body, options, cancel, usage)
                async with contextlib.aclosing(deltas):
                    async for delta in deltas:
                        yielded = True
                        yield delta
                return
            except _Retryable as failure:
                if yielded or attempt >= self.retries or cancel.cancelled:
                    raise failure.error from failure.__cause__
                attempt += 1
                wait_s = failure.wait_s
                if wait_s is None:
                    wait_s = BACKOFF_S * 2 ** (attempt - 1)
                log.info("%s; attempt %d of %d in %.2f s", failure.error, attempt + 1,
                         self.retries + 1, wait_s)  # fmt: skip
                await asyncio.sleep(wait_s)

    def _request(
        self, messages: list[dict[str, Any]], options: GenerationOptions
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": options.max_new_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
        }
        if self.model:
            request["model"] = self.model
        if options.stop:  # the port applies them too; the remote stops sooner
            request["stop"] = list(options.stop)
        if options.seed is not None:
            request["seed"] = options.seed
        return request

    async def _attempt(
        self, body: bytes, options: GenerationOptions, cancel: CancelToken, usage: Usage
    ) -> AsyncIterator[str]:
        """One request and its stream. Failures before the first token are ``_Retryable`` when
        another attempt may succeed; the response is closed however this ends."""
        request = self._client.build_request(
            "POST", self._endpoint, content=body, headers={"content-type": "application/json"}
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=False) from exc
        chunks = response.aiter_bytes()
        try:
            if response.status_code != 200:
                raise await self._status_error(response)
            started, ended, counted = False, False, 0
            reported: tuple[int, int] | None = None
            finish: str | None = None
            decoder = SSEDecoder()
            while not (ended or cancel.cancelled):
                try:
                    raw = await anext(chunks, None)
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc, started=started) from exc
                ended = raw is None
                for data in decoder.close() if raw is None else decoder.feed(raw):
                    try:
                        chunk = parse_chunk(data)
                    except ChunkFormatError as exc:
                        raise self._error(f"sent {exc}") from exc
                    if chunk.error is not None:
                        raise self._error(f"reported an error: {self._scrub(chunk.error)}")
                    if chunk.done:
                        ended = True
                        await _drain(chunks)  # the body's end: the connection is kept alive
                        break
                    reported = chunk.usage or reported
                    finish = chunk.finish_reason or finish
                    if chunk.text:
                        started = True
                        counted += 1
                        usage.output_tokens = counted
                        yield chunk.text
            if reported is not None:
                usage.input_tokens, usage.output_tokens = reported
            elif finish == "length":  # it stopped at max_tokens: chunks may hold several tokens
                usage.output_tokens = max(counted, options.max_new_tokens)
        finally:
            await response.aclose()  # mid-stream: the connection is closed, the remote sees it
            await chunks.aclose()

    # -- errors -----------------------------------------------------------------------------------

    def _error(self, what: str) -> ModelError:
        return ModelError(f"the model server at {self.remote} {what}")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text[:300]

    def _transport_error(self, exc: httpx.HTTPError, *, started: bool) -> Exception:
        reason = self._scrub(str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.ReadTimeout):
            return ModelTimeoutError(
                f"the model server at {self.remote} sent nothing for {self.token_timeout_s:g} s"
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return self._error(f"did not accept a connection in time ({reason})")
        if isinstance(exc, httpx.PoolTimeout):
            return self._error(f"has all {MAX_CONNECTIONS} connections busy")
        if started:
            return self._error(f"broke off the reply ({type(exc).__name__}: {reason})")
        error = self._error(f"is unreachable ({type(exc).__name__}: {reason})")
        if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):
            return _Retryable(error)
        return error

    async def _status_error(self, response: httpx.Response) -> Exception:
        """An HTTP error answer: its message read from the body (the first 64 KiB)."""
        body = b""
        with contextlib.suppress(httpx.HTTPError):
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) >= _ERROR_BODY_BYTES:
                    break
        try:
            message = error_message(orjson.loads(body))
        except orjson.JSONDecodeError:
            message = body[:300].decode("utf-8", "replace").strip()
        message = self._scrub(message) or response.reason_phrase or "no message"
        status = response.status_code
        if status == 400 and _CONTEXT_MESSAGE.search(message):
            return ContextLengthError(f"the model server at {self.remote}: {message}")
        error = self._error(f"answered HTTP {status}: {message}")
        if status in RETRY_STATUSES:
            return _Retryable(error, _retry_after(response.headers.get("retry-after")))
        return error


_ASCII = bytes(range(128))


def estimate_tokens(text: str) -> int:
    """ASCII bytes / 4 + other UTF-8 bytes / 2, rounded up (about 4 English characters a token,
    1.5 tokens a CJK character)."""
    if text.isascii():
        return -(-len(text) // 4)
    data = text.encode("utf-8", "replace")
    other = len(data.translate(None, _ASCII))
    return -(-(len(data) - other + 2 * other) // 4)


def _parse_base_url(base_url: str) -> httpx.URL:
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"openai_compatible: base_url is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(
            "openai_compatible: base_url must be an http(s) URL with a host, such as "
            "http://localhost:8000/v1"
        )
    return url


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read the body to its end after ``[DONE]``: a connection whose body was not read to the
    end is closed, not kept for the next request. A server that goes on sending gets its
    connection closed after ``DRAIN_S``."""
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(DRAIN_S):
            async for _ in chunks:
                pass


def _host_port(url: httpx.URL) -> str:
    """How errors and logs name the remote: never its credentials, path or query."""
    return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, capped; an HTTP date (or nothing) means the backoff."""
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_MAX_S) if value else None
    except ValueError:
        return None


# -- the registry's entry points ------------------------------------------------------------------


def build(settings: Settings) -> OpenAICompatibleLanguageModel:
    llm = settings.llm
    if not llm.base_url:
        raise ConfigurationError(
            "the openai_compatible language model needs the server's URL: set "
            "ASSISTANT_LLM__BASE_URL (e.g. http://localhost:8000/v1 for vLLM, "
            "http://localhost:11434/v1 for Ollama)"
        )
    return OpenAICompatibleLanguageModel(
        llm.base_url,
        llm.api_key.get_secret_value() if llm.api_key is not None else None,
        llm.model,
        image_input=llm.image_input,
        context_tokens=llm.context_tokens,
        connect_timeout_s=llm.connect_timeout_s,
        read_timeout_s=llm.token_timeout_s,
        retries=llm.retries,
    )


def prepare(settings: Settings, *, progress: bool = True) -> list[str]:
    """What ``assistant prepare-models`` shows: nothing to prepare, the model is remote."""
    remote = "(no ASSISTANT_LLM__BASE_URL set)"
    if settings.llm.base_url:
        with contextlib.suppress(ConfigurationError):
            remote = _host_port(_parse_base_url(settings.llm.base_url))
    return [f"language model: {settings.llm.model or 'the default model'} at {remote} (remote)"]


__all__ = ["OpenAICompatibleLanguageModel", "build", "prepare"]
