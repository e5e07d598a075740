"""Helpers for tests that talk to /v1/realtime: through Starlette's TestClient (``until``,
``turn``) or a real server with a ``websockets`` client (``next_event``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

#: The events of one spoken turn with server VAD, in the order they must come.
VOICE_TURN_ORDER = (
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.created",
    "response.created",
    "response.output_text.delta",
    "response.done",
)


def until(ws: Any, kind: str, limit: int = 2000) -> list[dict]:
    """Events up to and including the first of type ``kind`` (at most ``limit`` of them)."""
    events: list[dict] = []
    for _ in range(limit):
        events.append(ws.receive_json())
        if events[-1]["type"] == kind:
            return events
    raise AssertionError(f"no {kind} in {[e['type'] for e in events][-20:]}")


async def next_event(ws: Any, kind: str, timeout_s: float = 60) -> tuple[dict, list[dict]]:
    """The first event of type ``kind`` from a ``websockets`` client, and every event before it
    (each awaited at most ``timeout_s``)."""
    seen: list[dict] = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
        if event["type"] == kind:
            return event, seen
        seen.append(event)


def turn(ws: Any, text: str, *image_urls: str, item_id: str | None = None) -> str:
    """One text turn (the user's item, then ``response.create``): the completed reply's text."""
    content: list[dict[str, Any]] = [{"type": "input_text", "text": text}]
    content += [{"type": "input_image", "image_url": url} for url in image_urls]
    item: dict[str, Any] = {"type": "message", "role": "user", "content": content}
    if item_id is not None:
        item["id"] = item_id
    ws.send_json({"type": "conversation.item.create", "item": item})
    events = until(ws, "conversation.item.created")
    assert not [e for e in events if e["type"] == "error"], events
    ws.send_json({"type": "response.create"})
    done = until(ws, "response.done")[-1]["response"]
    assert done["status"] == "completed", done
    return done["output"][0]["content"][0]["text"]


def assert_in_order(kinds: list[str], order: tuple[str, ...] = VOICE_TURN_ORDER) -> None:
    """Each of ``order`` occurs in ``kinds``, first occurrences in that order."""
    firsts = [kinds.index(kind) for kind in order]
    assert firsts == sorted(firsts), kinds
