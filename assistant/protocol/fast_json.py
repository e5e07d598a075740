"""The server events of a text turn's hot path, encoded straight to JSON.

A text turn sends about ten events; building each as a pydantic model (validated, nested) and then
serialising it costs more than everything else the event loop does for the turn but writing the
frames. These functions write the same JSON from plain values with orjson. The models in
``protocol.server`` stay the definition of the wire format: tests check that every function here gives
exactly what its model gives for the same values.
"""

from __future__ import annotations

from typing import Any

import orjson

from assistant.messages import Message, new_id
from assistant.protocol.items import wire_item_dict


def _dumps(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()


def _response(
    response_id: str, status: str, details: dict[str, Any] | None, output: list[Any], usage: Any
) -> dict[str, Any]:
    return {
        "id": response_id, "object": "realtime.response", "status": status,
        "status_details": details, "output": output, "usage": usage,
    }  # fmt: skip


def item_created(message: Message, previous_item_id: str | None) -> str:
    """``conversation.item.created``."""
    return _dumps({
        "event_id": new_id("event"), "type": "conversation.item.created",
        "previous_item_id": previous_item_id, "item": wire_item_dict(message),
    })  # fmt: skip


def response_created(response_id: str) -> str:
    """``response.created`` of a response just started."""
    return _dumps({
        "event_id": new_id("event"), "type": "response.created",
        "response": _response(response_id, "in_progress", None, [], None),
    })  # fmt: skip


def text_delta(response_id: str, item_id: str, delta: str) -> str:
    """``response.output_text.delta``."""
    return _output_text("response.output_text.delta", response_id, item_id, "delta", delta)


def text_done(response_id: str, item_id: str, text: str) -> str:
    """``response.output_text.done``."""
    return _output_text("response.output_text.done", response_id, item_id, "text", text)


def _output_text(kind: str, response_id: str, item_id: str, field: str, value: str) -> str:
    return _dumps({
        "event_id": new_id("event"), "response_id": response_id, "item_id": item_id,
        "output_index": 0, "content_index": 0, "type": kind, field: value,
    })  # fmt: skip


def response_done(
    response_id: str,
    status: str,
    details: dict[str, Any] | None,
    output: Message | None,
    usage: tuple[int, int],
) -> str:
    """``response.done``; ``usage`` is (input tokens, output tokens)."""
    tokens_in, tokens_out = usage
    wire_usage = {
        "input_tokens": tokens_in, "output_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }  # fmt: skip
    items = [wire_item_dict(output)] if output is not None else []
    return _dumps({
        "event_id": new_id("event"), "type": "response.done",
        "response": _response(response_id, status, details, items, wire_usage),
    })  # fmt: skip
