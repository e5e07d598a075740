"""The one error tree of the assistant. Every error carries a stable ``code`` that the wire protocol
sends in an ``error`` event (``{"error": {"type", "code", "message", "event_id"}}``) and REST in its
error body. Each class's ``type`` is in brackets; its codes follow, the class's default first.
A test finds every code raised in ``assistant/`` and ``adapters/`` here, under the class that
raises it, and checks the README's list against this tree.

    AssistantError                  [server_error]          internal_error
    ├── InvalidRequestError         [invalid_request_error] invalid_request, event_too_large,
    │   │                                                   request_too_large,
    │   │                                                   unsupported_content,
    │   │                                                   response_cancel_not_active,
    │   │                                                   unsupported_parameter,
    │   │                                                   unsupported_value,
    │   │   # audio
    │   │                                                   invalid_audio, invalid_audio_bytes,
    │   │                                                   invalid_base64, audio_too_large,
    │   │                                                   audio_too_long, unsupported_language,
    │   │                                                   unsupported_audio_format,
    │   │                                                   unsupported_voice,
    │   │                                                   unsupported_response_format,
    │   │                                                   input_audio_buffer_commit_empty,
    │   │   # images
    │   │                                                   invalid_image_url, image_url_not_allowed,
    │   │                                                   image_too_large, image_too_many_pixels,
    │   │                                                   unsupported_image_format, invalid_image,
    │   │                                                   image_expired,
    │   │   # webhooks
    │   │                                                   invalid_webhook_url,
    │   │                                                   webhook_url_not_allowed,
    │   │                                                   too_many_webhooks
    │   ├── InvalidJSONError                                invalid_json
    │   ├── UnknownEventError                               unknown_event
    │   ├── InvalidEventError                               invalid_event, unsupported_frame
    │   ├── NoInputError                                    no_input
    │   ├── DocumentError                                   invalid_document,
    │   │                                                   unsupported_document_type,
    │   │                                                   empty_document, encrypted_document,
    │   │                                                   document_too_large,
    │   │                                                   invalid_knowledge_base
    │   └── ContextLengthError                              context_length_exceeded
    ├── AuthenticationError         [authentication_error]  invalid_credentials,
    │   │                                                   missing_credentials, invalid_api_key,
    │   │                                                   invalid_token, token_expired,
    │   │                                                   invalid_user_signature
    │   └── OriginNotAllowedError                           origin_not_allowed
    ├── PermissionDeniedError       [permission_error]      insufficient_scope
    ├── RateLimitError              [rate_limit_error]      rate_limited, token_rate_limited,
    │                                                       too_many_connections,
    │                                                       too_many_generations,
    │                                                       session_too_large, session_turn_limit
    ├── ConflictError               [conflict_error]        conflict
    │   ├── SessionBusyError                                session_busy
    │   ├── ResponseInProgressError                         response_in_progress
    │   ├── SlowClientError                                 slow_client
    │   └── ConversationStatusError                         conversation_status_conflict,
    │                                                       conversation_not_yours
    ├── NotFoundError               [not_found_error]       not_found
    │   ├── SessionNotFoundError                            session_not_found
    │   ├── ModelNotFoundError                              model_not_found
    │   ├── WebhookNotFoundError                            webhook_not_found
    │   ├── ImageNotFoundError                              image_not_found
    │   ├── EventsLostError                                 events_lost
    │   └── KnowledgeNotFoundError                          document_not_found,
    │                                                       knowledge_base_not_found
    ├── ConfigurationError          [configuration_error]   configuration_error
    │   ├── UnknownAdapterError                             unknown_adapter
    │   └── MissingDependencyError                          missing_dependency
    └── ServerError                 [server_error]          internal_error
        ├── ModelError                                      model_error
        │   ├── ModelTimeoutError                           model_timeout
        │   └── ServerBusyError                             server_busy
        └── StoreError                                      store_unavailable

Codes are part of the protocol: never rename one, add a new class or code instead.
"""

from __future__ import annotations

import re
import sys

_TREE_LINE = re.compile(r"^[\s│├└─]*(?P<cls>[A-Z]\w*)?\s*(?:\[(?P<type>\w+)\])?\s*(?P<codes>.*)$")


def documented_codes() -> dict[str, list[str]]:
    """The tree drawn in this module's docstring: class name -> its codes, in order."""
    tree: dict[str, list[str]] = {}
    current = None
    for line in (__doc__ or "").splitlines():
        if not line.startswith("    "):  # the tree is the docstring's indented block
            continue
        match = _TREE_LINE.match(line.split("#", 1)[0].rstrip())
        if match is None:
            continue
        current = match["cls"] or current
        codes = [c for c in re.split(r"[,\s]+", match["codes"]) if c]
        if current is not None:
            tree.setdefault(current, []).extend(codes)
    return tree


class AssistantError(Exception):
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        event_id: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if code is not None:
            self.code = code
        #: The client event this error answers, echoed in the ``error`` event.
        self.event_id = event_id
        #: The request's parameter at fault (``messages[0].content``), in REST error bodies.
        self.param = param

    @property
    def message(self) -> str:
        return str(self)


class InvalidRequestError(AssistantError):
    """The client sent something the server cannot act on."""

    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSONError(InvalidRequestError):
    """The frame is not valid JSON."""

    code = "invalid_json"


class UnknownEventError(InvalidRequestError):
    """The event type is not one the server knows."""

    code = "unknown_event"


class InvalidEventError(InvalidRequestError):
    """The event is missing a field or has a field of the wrong shape."""

    code = "invalid_event"


class NoInputError(InvalidRequestError):
    """A response was asked for but the conversation holds no user input to answer."""

    code = "no_input"


class DocumentError(InvalidRequestError):
    """A file given to a knowledge base that cannot be ingested (nothing of it is stored)."""

    code = "invalid_document"


class ContextLengthError(InvalidRequestError):
    """The system prompt and the current turn alone do not fit the model's context."""

    code = "context_length_exceeded"


class AuthenticationError(AssistantError):
    """The request carries no credentials, or credentials the server does not accept."""

    type = "authentication_error"
    code = "invalid_credentials"


class OriginNotAllowedError(AuthenticationError):
    """A browser page from an origin the key (or the open server) does not allow."""

    code = "origin_not_allowed"


class PermissionDeniedError(AssistantError):
    """The credentials are valid but lack the scope the route needs."""

    type = "permission_error"
    code = "insufficient_scope"


class RateLimitError(AssistantError):
    """A limit of the key or of the session was reached; ``retry_after_s`` says when to try again
    (None: not by waiting, e.g. a session that is full)."""

    type = "rate_limit_error"
    code = "rate_limited"

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        event_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, code=code, event_id=event_id)
        self.retry_after_s = retry_after_s


class ConflictError(AssistantError):
    type = "conflict_error"
    code = "conflict"


class SessionBusyError(ConflictError):
    """Another connection is writing to this session right now."""

    code = "session_busy"


class ResponseInProgressError(ConflictError):
    """A response is already streaming on this connection."""

    code = "response_in_progress"


class SlowClientError(ConflictError):
    """The client does not read events as fast as they are produced."""

    code = "slow_client"


class ConversationStatusError(ConflictError):
    """The conversation's status does not allow this (another agent claimed it first, it was
    handed back...); ``conversation_not_yours``: another agent holds it."""

    code = "conversation_status_conflict"


class NotFoundError(AssistantError):
    type = "not_found_error"
    code = "not_found"


class SessionNotFoundError(NotFoundError):
    """No session with this id exists (or it expired)."""

    code = "session_not_found"


class ModelNotFoundError(NotFoundError):
    """No model with this id is served here (``GET /v1/models`` lists the one that is)."""

    code = "model_not_found"


class WebhookNotFoundError(NotFoundError):
    """No webhook with this id in the caller's tenant."""

    code = "webhook_not_found"


class ImageNotFoundError(NotFoundError):
    """No image with this sha256 in the conversation's history (or its bytes expired)."""

    code = "image_not_found"


class EventsLostError(NotFoundError):
    """Some events after the sequence number a client resumes from are no longer kept (the
    session's stream was trimmed past it, or expired): read the history again, then follow on
    from its ``last_seq``."""

    code = "events_lost"


class KnowledgeNotFoundError(NotFoundError):
    """No such document in the knowledge base, or no such knowledge base."""

    code = "document_not_found"


class ConfigurationError(AssistantError):
    type = "configuration_error"
    code = "configuration_error"


class UnknownAdapterError(ConfigurationError):
    """The configured adapter name is not registered."""

    code = "unknown_adapter"


class MissingDependencyError(ConfigurationError):
    """An optional dependency of the configured adapter is not installed."""

    code = "missing_dependency"


class ServerError(AssistantError):
    type = "server_error"
    code = "internal_error"


class ModelError(ServerError):
    """The language model failed."""

    code = "model_error"


class ModelTimeoutError(ModelError):
    """The language model did not answer in time."""

    code = "model_timeout"


class ServerBusyError(ModelError):
    """The model serves as many replies as it can hold and queues as many as it may: try again
    shortly (nothing was generated; the connection stays usable)."""

    code = "server_busy"


class StoreError(ServerError):
    """The session store could not be reached or failed."""

    code = "store_unavailable"


def shown(value: object, limit: int = 60) -> str:
    """A client's value as an error message quotes it: its repr, cut short (a message never
    echoes a whole frame, path or query string back)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def codes_markdown() -> str:
    """The README's table of error codes, made from the tree (``python -m assistant.errors``)."""
    rows = ["| code | class | type |", "|---|---|---|"]
    module = sys.modules[__name__]
    for name, codes in documented_codes().items():
        kind = getattr(module, name).type
        rows.extend(f"| `{code}` | `{name}` | `{kind}` |" for code in codes)
    return "\n".join(rows)


def _rewrite_readme(path: str) -> None:
    """``python -m assistant.errors README.md``: the table between the README's markers, anew."""
    start, end = "<!-- error-codes: python -m assistant.errors -->", "<!-- /error-codes -->"
    with open(path, encoding="utf-8") as source:
        text = source.read()
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    with open(path, "w", encoding="utf-8") as out:
        out.write(f"{head}{start}\n{codes_markdown()}\n{end}{tail}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        _rewrite_readme(sys.argv[1])
    else:
        print(codes_markdown())
