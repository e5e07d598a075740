"""The hot path's JSON encoders give exactly what the protocol's models give."""

import json

import pytest

from assistant.messages import AudioPart, ImagePart, Message, TextPart
from assistant.protocol import (
    ConversationItemCreated,
    ResponseCreated,
    ResponseDone,
    ResponseOutputTextDelta,
    ResponseOutputTextDone,
    WireResponse,
    WireUsage,
    wire_item,
)
from assistant.protocol import fast_json as hot

USER = Message(
    role="user",
    content=(
        TextPart(text='Quote "this" \\ and naïve ünïcode ☕\n'),
        ImagePart(sha256="ab" * 32),
        AudioPart(transcript="spoken words"),
    ),
    turn_id="turn-1",
)
REPLY = Message.from_text("assistant", "The answer.", status="interrupted")


def same(fast: str, model: object) -> None:
    """Equal as JSON, event id aside (each event draws its own)."""
    mine, theirs = json.loads(fast), json.loads(model.model_dump_json())  # type: ignore[attr-defined]
    assert mine.pop("event_id").startswith("event_") and theirs.pop("event_id")
    assert mine == theirs
    assert list(mine) == list(theirs)  # same field order too


@pytest.mark.parametrize("message", [USER, REPLY])
@pytest.mark.parametrize("previous", [None, "msg_before"])
def test_item_created(message, previous):
    same(hot.item_created(message, previous),
         ConversationItemCreated(previous_item_id=previous, item=wire_item(message)))  # fmt: skip


def test_response_created_delta_and_text_done():
    same(hot.response_created("resp_1"), ResponseCreated(response=WireResponse(id="resp_1")))
    same(hot.text_delta("resp_1", "msg_2", ' "ü"\n'),
         ResponseOutputTextDelta(response_id="resp_1", item_id="msg_2", delta=' "ü"\n'))  # fmt: skip
    same(hot.text_done("resp_1", "msg_2", "All of it."),
         ResponseOutputTextDone(response_id="resp_1", item_id="msg_2", text="All of it."))  # fmt: skip


@pytest.mark.parametrize(
    ("status", "details", "output"),
    [
        ("completed", None, REPLY),
        ("cancelled", {"type": "cancelled", "reason": "client_cancelled"}, REPLY),
        ("failed", {"type": "failed", "error": {"type": "server_error", "code": "model_error"}}, None),
    ],
)
def test_response_done(status, details, output):
    usage = WireUsage(input_tokens=31, output_tokens=7, total_tokens=38)
    model = ResponseDone(response=WireResponse(
        id="resp_1", status=status, status_details=details,
        output=[wire_item(output)] if output is not None else [], usage=usage,
    ))  # fmt: skip
    same(hot.response_done("resp_1", status, details, output, (31, 7)), model)


def test_event_ids_are_unique():
    ids = {json.loads(hot.text_delta("r", "m", "x"))["event_id"] for _ in range(10_000)}
    assert len(ids) == 10_000
