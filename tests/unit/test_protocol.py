import json

import pytest

from assistant.errors import InvalidEventError, InvalidJSONError, UnknownEventError
from assistant.messages import AudioPart, Message, PendingImage, TextPart
from assistant.protocol import (
    ConversationItemCreate,
    ErrorEvent,
    ResponseCreate,
    message_from_input,
    parse_client_event,
    wire_item,
)


def test_item_create_parses_into_typed_event():
    frame = json.dumps(
        {
            "type": "conversation.item.create",
            "event_id": "e1",
            "item": {"id": "turn-1", "type": "message", "role": "user",
                     "content": [{"type": "input_text", "text": "hello"}]},
        }
    )
    event = parse_client_event(frame)
    assert isinstance(event, ConversationItemCreate)
    assert event.event_id == "e1"
    message = message_from_input(event.item)
    assert message.turn_id == "turn-1"
    assert message.content == (TextPart(text="hello"),)


def test_response_create_defaults():
    event = parse_client_event('{"type": "response.create"}')
    assert isinstance(event, ResponseCreate)
    assert event.response.max_output_tokens is None


@pytest.mark.parametrize(
    ("frame", "error", "code", "event_id"),
    [
        ("{not json", InvalidJSONError, "invalid_json", None),
        ("[1, 2]", InvalidEventError, "invalid_event", None),
        ('{"type": "no.such.event", "event_id": "e7"}', UnknownEventError, "unknown_event", "e7"),
        ('{"event_id": "e8"}', UnknownEventError, "unknown_event", "e8"),
        ('{"type": "conversation.item.create", "event_id": "e9"}', InvalidEventError, "invalid_event", "e9"),
        ('{"type": "response.create", "response": {"max_output_tokens": 0}}', InvalidEventError, "invalid_event", None),
        ('{"type": "conversation.item.create", "item": {"content": []}}', InvalidEventError, "invalid_event", None),
    ],
)
def test_bad_frames_raise_coded_errors(frame, error, code, event_id):
    with pytest.raises(error) as info:
        parse_client_event(frame)
    assert info.value.code == code
    assert info.value.event_id == event_id
    wire = json.loads(ErrorEvent.from_exception(info.value).model_dump_json())
    assert wire["type"] == "error"
    assert wire["error"]["code"] == code
    assert wire["error"]["event_id"] == event_id
    assert wire["error"]["message"]


def test_image_part_arrives_as_a_pending_image_for_the_orchestrator_to_store():
    event = parse_client_event(json.dumps({
        "type": "conversation.item.create",
        "item": {"content": [{"type": "input_text", "text": "what is this?"},
                             {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
    }))
    message = message_from_input(event.item)
    assert message.content[1] == PendingImage(source="data:image/png;base64,AAAA")
    assert message.text == "what is this?"


def test_wire_item_maps_roles_and_parts():
    user = Message(role="user", content=(TextPart(text="hi"), AudioPart(transcript="said")))
    assistant = Message.from_text("assistant", "hello", status="interrupted")
    assert [c.type for c in wire_item(user).content] == ["input_text", "input_audio"]
    wired = wire_item(assistant)
    assert wired.content[0].type == "output_text"
    assert wired.status == "interrupted"


# Found by the fuzzer (bench/fuzz.py): a ``type`` that is a JSON object or array is unhashable and
# used to raise a TypeError that closed the socket; long client values were echoed whole.
@pytest.mark.parametrize("kind", [{}, {"a": 1}, [], ["session.update"], 1.5, True, None])
def test_a_type_of_any_json_value_is_an_unknown_event(kind):
    with pytest.raises(UnknownEventError) as info:
        parse_client_event(json.dumps({"type": kind, "event_id": "e1"}))
    assert (info.value.code, info.value.event_id) == ("unknown_event", "e1")


@pytest.mark.parametrize(
    "event",
    [
        {"type": "x" * 100_000},
        {"type": "response.create", "k" * 100_000: 1},
        {"type": "conversation.item.create",
         "item": {"content": [{"type": "y" * 100_000, "text": "hi"}]}},
    ],
)
def test_error_messages_do_not_echo_long_client_values(event):
    with pytest.raises((UnknownEventError, InvalidEventError)) as info:
        parse_client_event(json.dumps(event))
    assert len(info.value.message) < 1000


def test_an_event_id_longer_than_the_protocol_allows_is_not_echoed():
    with pytest.raises(InvalidEventError) as info:
        parse_client_event(json.dumps({"type": "response.create", "event_id": "e" * 129}))
    assert info.value.event_id is None
    with pytest.raises(UnknownEventError) as info:
        parse_client_event(json.dumps({"type": "nope", "event_id": "e" * 129}))
    assert info.value.event_id is None
