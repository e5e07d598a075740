"""The ``/v1/realtime`` protocol as an AsyncAPI 3.0 document, made from the protocol's pydantic
models (``protocol.client``, ``protocol.server``), the handshake's rules (``server.security``,
``server.realtime_route``) and the error tree (``errors.documented_codes``).

The document describes the server: it ``receive``\\s the client's events and ``send``\\s its own.
Served at ``GET /v1/realtime/asyncapi.json``, printed by ``assistant protocol-schema`` and
committed as ``docs/asyncapi.json`` (a test regenerates it and compares).
"""

from __future__ import annotations

import functools
import json
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from assistant import errors
from assistant.protocol import ClientEvent, ServerEvent
from assistant.server.outbox import CLOSE_SLOW_CLIENT
from assistant.server.realtime_route import CLOSE_POLICY, CLOSE_SESSION_NOT_FOUND
from assistant.server.security import REALTIME_PROTOCOL, SECRET_PROTOCOL

ADDRESS = "/v1/realtime"
DOCUMENT_PATH = f"{ADDRESS}/asyncapi.json"
#: The binary frame's message name: raw audio, the same as ``input_audio_buffer.append``.
BINARY_AUDIO = "binary.pcm16"
_REF = "#/components/schemas/{model}"

CLOSE_CODES = {
    str(CLOSE_POLICY): "the handshake was refused: the reason is the error code "
    "(missing_credentials, invalid_api_key, token_expired, origin_not_allowed, "
    "insufficient_scope, too_many_connections, ...)",
    str(CLOSE_SESSION_NOT_FOUND): "?session_id= names no session of the caller's tenant "
    "(an error event session_not_found comes first)",
    str(CLOSE_SLOW_CLIENT): "slow_client: the client let too many events pile up unread",
    "1009": "a frame over 16 MiB (the WebSocket layer's limit)",
    "1011": "the session could not be opened (an error event comes first), or a ping got no "
    "pong within 20 s",
}


class _EveryFieldSent(GenerateJsonSchema):
    """Server events are written whole (a field with no value is ``null``), so in the
    serialization schemas every field is required."""

    def field_is_required(self, field: Any, total: bool) -> bool:
        if self.mode == "serialization":
            return field.get("serialization_exclude_if") is None
        return super().field_is_required(field, total)


def event_models(union: Any) -> list[type[BaseModel]]:
    """The event models of a union (``ClientEvent`` is annotated with its discriminator)."""
    if typing.get_origin(union) is typing.Annotated:
        union = typing.get_args(union)[0]
    return list(typing.get_args(union))


def event_type(model: type[BaseModel]) -> str:
    """An event model's ``type`` on the wire."""
    return typing.get_args(model.model_fields["type"].annotation)[0]


def schemas() -> dict[str, Any]:
    """Every schema the events use, by model name: client events as the server validates them,
    server events as it writes them."""
    models = [(m, "validation") for m in event_models(ClientEvent)]
    models += [(m, "serialization") for m in event_models(ServerEvent)]
    _, top = models_json_schema(models, ref_template=_REF, schema_generator=_EveryFieldSent)
    found = top["$defs"]
    for schema in found.values():
        _drop_discriminators(schema)
    _error_codes_in(found["WireError"])
    return found


def _drop_discriminators(node: Any) -> None:
    """pydantic writes OpenAPI's ``discriminator`` object beside a ``oneOf``; AsyncAPI's schema
    keyword of that name is a different thing (a string), and each variant's ``type`` constant
    tells them apart anyway."""
    if isinstance(node, dict):
        node.pop("discriminator", None)
        for value in node.values():
            _drop_discriminators(value)
    elif isinstance(node, list):
        for value in node:
            _drop_discriminators(value)


def error_codes() -> list[dict[str, str]]:
    """Every documented code with its class and type, in the tree's order (a code two classes
    share is listed once, under the first)."""
    rows, seen = [], set()
    for name, codes in errors.documented_codes().items():
        for code in codes:
            if code not in seen:
                seen.add(code)
                rows.append({"code": code, "class": name, "type": getattr(errors, name).type})
    return rows


def _error_codes_in(wire_error: dict[str, Any]) -> None:
    rows = error_codes()
    properties = wire_error["properties"]
    properties["code"]["enum"] = [row["code"] for row in rows]
    properties["type"]["enum"] = sorted({row["type"] for row in rows})


def _message(model: type[BaseModel], direction: str) -> dict[str, Any]:
    doc = (model.__doc__ or "").strip()
    message: dict[str, Any] = {
        "name": event_type(model),
        "title": model.__name__,
        "summary": " ".join(doc.split("\n\n")[0].split()),
        "contentType": "application/json",
        "payload": {"$ref": _REF.format(model=model.__name__)},
        "x-direction": direction,
    }
    if model.__name__ == "ErrorEvent":
        message["x-error-codes"] = error_codes()
    return message


def _binary_audio() -> dict[str, Any]:
    return {
        "name": BINARY_AUDIO,
        "title": "Binary audio frame",
        "summary": "A binary WebSocket frame: raw PCM16 little-endian, 16 kHz, mono, appended to "
        "the input audio buffer (input_audio_buffer.append without base64).",
        "contentType": "application/octet-stream",
        "payload": {"type": "string", "format": "binary"},
        "x-direction": "client",
    }


def messages() -> dict[str, dict[str, Any]]:
    """Every message by its name: the client's events, the binary audio frame, the server's."""
    found = {event_type(m): _message(m, "client") for m in event_models(ClientEvent)}
    found[BINARY_AUDIO] = _binary_audio()
    found.update({event_type(m): _message(m, "server") for m in event_models(ServerEvent)})
    return found


def _channel(names: list[str]) -> dict[str, Any]:
    header = f"{SECRET_PROTOCOL}<client secret>"
    return {
        "address": ADDRESS,
        "title": "Realtime conversation",
        "description": (
            "One WebSocket, one session. JSON text frames carry the events (every client event "
            "may carry an event_id, which an error it causes echoes); binary frames carry raw "
            "PCM16 audio. The first server event is session.created. A bad event gets an error "
            "event and the socket stays open."
        ),
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
        "bindings": {"ws": _ws_binding(header)},
        "x-close-codes": CLOSE_CODES,
    }


def _ws_binding(header: str) -> dict[str, Any]:
    """The handshake: ``?session_id=`` and the headers that carry the credentials."""
    session_id = (
        "resume this session of the caller's tenant; left out: a new session (a client secret "
        "bound to a session opens that one)"
    )
    protocols = (
        f"browsers: '{REALTIME_PROTOCOL}, {header}' (the server accepts '{REALTIME_PROTOCOL}'); "
        "a secret is never read from the URL"
    )
    headers = {
        "Authorization": {"type": "string", "description": "Bearer <key or client secret>"},
        "Sec-WebSocket-Protocol": {"type": "string", "description": protocols},
        "Origin": {"type": "string", "description": "checked against the key's origins"},
    }
    return {
        "bindingVersion": "0.1.0",
        "method": "GET",
        "query": {
            "type": "object",
            "properties": {"session_id": {"type": "string", "description": session_id}},
        },
        "headers": {"type": "object", "properties": headers},
    }


def _security_schemes() -> dict[str, Any]:
    return {
        "bearer": {
            "type": "http", "scheme": "bearer",
            "description": "servers: a secret key sk_..., a static key (ASSISTANT_API_KEYS) or a "
            "client secret cs_..., in the handshake's Authorization header",
        },
        "clientSecretSubprotocol": {
            "type": "httpApiKey", "in": "header", "name": "Sec-WebSocket-Protocol",
            "description": f"browsers: the client secret (POST /v1/realtime/client_secrets) "
            f"offered as the subprotocol '{SECRET_PROTOCOL}<client secret>' beside "
            f"'{REALTIME_PROTOCOL}'",
        },
    }  # fmt: skip


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document (a JSON-ready dict)."""
    from assistant import __version__

    found = messages()
    client = [n for n, m in found.items() if m["x-direction"] == "client"]
    server = [n for n, m in found.items() if m["x-direction"] == "server"]
    in_channel = "#/channels/realtime/messages/{}"
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "assistant realtime protocol",
            "version": __version__,
            "description": (
                "The WebSocket protocol of the assistant server, named after the OpenAI "
                "Realtime API's events. This document describes the server: it receives the "
                "client's events and sends its own. Error codes: components.messages.error's "
                "x-error-codes (from assistant/errors.py)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:8000",
                "protocol": "ws",
                "description": "assistant serve's default address (wss:// behind TLS)",
                "security": [
                    {"$ref": "#/components/securitySchemes/bearer"},
                    {"$ref": "#/components/securitySchemes/clientSecretSubprotocol"},
                ],
            }
        },  # fmt: skip
        "channels": {"realtime": _channel(list(found))},
        "operations": {
            "receiveClientEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/realtime"},
                "summary": "The client's events (and binary audio frames), handled in order.",
                "messages": [{"$ref": in_channel.format(n)} for n in client],
            },
            "sendServerEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/realtime"},
                "summary": "The server's events, in the order they happen.",
                "messages": [{"$ref": in_channel.format(n)} for n in server],
            },
        },  # fmt: skip
        "components": {
            "messages": found,
            "schemas": schemas(),
            "securitySchemes": _security_schemes(),
        },
    }


@functools.cache
def render() -> str:
    """The document as the committed file holds it: sorted keys, two-space indent, one newline
    (made once per process)."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
