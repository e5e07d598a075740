"""Client frames for the fuzzer (``bench.fuzz``), as hypothesis strategies: random JSON, random
text and binary frames, the client events of the protocol with wrong values in their fields
(each field is sometimes right, sometimes any JSON value), and the events of the four suites
``frames``, ``events``, ``images`` and ``audio``. A frame is a ``str`` (a text frame) or ``bytes``
(a binary frame); an event is a dict, sent as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from bench.fuzz_media import audio_texts, image_urls, pcm_chunks, pcm_texts

#: The protocol's client event types (README, "The protocol").
EVENT_TYPES = (
    "session.update", "conversation.item.create", "response.create", "response.cancel",
    "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
)  # fmt: skip

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities too: json.dumps writes them, they are not JSON
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def wrong(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``valid``, sometimes any JSON value in its place."""
    return st.one_of(valid, valid, json_values)


def _event(kind: str | st.SearchStrategy[Any], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict]:
    """An event of ``kind`` whose ``fields`` are each present or left out; an ``event_id`` and an
    unknown field sometimes."""
    optional = {**fields, "event_id": event_ids, "unexpected": json_values}
    required = {"type": kind if isinstance(kind, st.SearchStrategy) else st.just(kind)}
    return st.fixed_dictionaries(required, optional=optional)  # type: ignore[arg-type]


event_ids = st.one_of(st.text(max_size=16), st.text(min_size=129, max_size=300), json_scalars)
_texts = st.text(max_size=200)
_tokens = st.integers(-5, 10_000) | st.sampled_from([0, 1, 8192, 8193, 2**63])
_temperatures = st.floats(-1, 3) | st.sampled_from([0.0, 2.0, 2.0000001])

# -- the fields ------------------------------------------------------------------------------------

turn_detection = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "type": wrong(st.sampled_from(["server_vad", "semantic_vad", "none"])),
        "threshold": wrong(st.floats(-1, 2)),
        "prefix_padding_ms": wrong(st.integers(-100, 6000)),
        "silence_duration_ms": wrong(st.integers(0, 12_000)),
        "create_response": wrong(st.booleans()),
        "interrupt_response": wrong(st.booleans()),
    },
)
session_config = st.fixed_dictionaries(
    {},
    optional={
        "instructions": wrong(_texts),
        "max_output_tokens": wrong(_tokens),
        "temperature": wrong(_temperatures),
        "modalities": wrong(st.lists(st.sampled_from(["text", "audio", "video"]), max_size=3)),
        "input_audio_format": wrong(st.sampled_from(["pcm16", "g711_ulaw", "opus", ""])),
        "output_audio_format": wrong(st.sampled_from(["pcm16", "mp3"])),
        "turn_detection": wrong(turn_detection),
        "voice": wrong(st.sampled_from(["en-us", "en-gb", "en-us+f3", "en-us+../x", "alloy", "", "../../etc"])),
    },
)
response_config = st.fixed_dictionaries(
    {},
    optional={
        "instructions": wrong(_texts),
        "max_output_tokens": wrong(_tokens),
        "temperature": wrong(_temperatures),
    },
)


def _part(kind: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({"type": st.just(kind), **fields})


text_parts = _part("input_text", text=wrong(_texts))
image_parts = _part("input_image", image_url=wrong(image_urls))
audio_parts = st.one_of(
    _part("input_audio", audio=wrong(audio_texts)),
    _part("input_audio", audio=wrong(audio_texts), transcript=wrong(_texts)),
)
other_parts = st.one_of(
    st.fixed_dictionaries({"type": wrong(st.sampled_from(["output_text", "input_file", "text"]))}),
    json_values,
)


def items(parts: st.SearchStrategy[Any]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"content": wrong(st.lists(parts, max_size=4))},
        optional={
            "id": wrong(st.text(max_size=140)),
            "type": wrong(st.just("message")),
            "role": wrong(st.sampled_from(["user", "system", "assistant", "tool"])),
        },
    )


any_part = st.one_of(text_parts, text_parts, image_parts, audio_parts, other_parts)

# -- the events ------------------------------------------------------------------------------------

session_updates = _event("session.update", session=wrong(session_config))
item_creates = _event("conversation.item.create", item=wrong(items(any_part)), previous_item_id=json_scalars)
response_creates = _event("response.create", response=wrong(response_config))
response_cancels = _event("response.cancel", response_id=wrong(st.text(max_size=30)))
audio_appends = _event("input_audio_buffer.append", audio=wrong(pcm_texts))
audio_commits = _event("input_audio_buffer.commit")
audio_clears = _event("input_audio_buffer.clear")
unknown_events = _event(st.text(max_size=40) | json_values | st.sampled_from([t.upper() for t in EVENT_TYPES]))
events = st.one_of(
    session_updates, item_creates, response_creates, response_cancels,
    audio_appends, audio_commits, audio_clears, unknown_events,
)  # fmt: skip


def to_json(event: Any, ascii_only: bool = True) -> str:
    return json.dumps(event, ensure_ascii=ascii_only)


# -- frames ----------------------------------------------------------------------------------------

json_frames = st.builds(to_json, json_values, st.booleans())
event_frames = st.builds(to_json, events, st.booleans())
binary_frames = st.one_of(
    pcm_chunks,
    st.binary(max_size=64),
    st.builds(lambda n: b"\x01\x00" * n, st.sampled_from([0, 1, 4000, 512 * 1024 + 1])),
)
text_frames = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["", "{", "}", "null", "[]", "{}", '{"type": null}', '"session.update"', "\x00"]),
)

def well_formed_items(parts: st.SearchStrategy[Any]) -> st.SearchStrategy[dict]:
    """A user item of the right shape: only its parts' payloads are fuzzed."""
    return st.fixed_dictionaries(
        {"type": st.just("message"), "role": st.just("user"), "content": st.lists(parts, min_size=1, max_size=3)}
    )  # fmt: skip


def _item_frames(parts: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    item = st.one_of(well_formed_items(parts), well_formed_items(parts), items(parts))
    return st.builds(to_json, st.fixed_dictionaries({"type": st.just("conversation.item.create"), "item": item}))


_payload_texts = _part("input_text", text=_texts)
_payload_images = _part("input_image", image_url=image_urls)
_payload_audio = _part("input_audio", audio=audio_texts)
_payload_appends = st.fixed_dictionaries({"type": st.just("input_audio_buffer.append"), "audio": pcm_texts})

#: The suites: each draws the frames of one case, sent in order on one connection.
SUITES: dict[str, st.SearchStrategy[list[str | bytes]]] = {
    # random JSON, random text, random binary frames, events of any shape
    "frames": st.lists(st.one_of(json_frames, text_frames, binary_frames, event_frames), min_size=1, max_size=4),
    # valid event shapes with wrong values
    "events": st.lists(event_frames, min_size=1, max_size=4),
    # images in items: valid, truncated, corrupt, huge declared sizes, bad data URLs
    "images": st.lists(_item_frames(st.one_of(_payload_images, _payload_images, _payload_texts)), min_size=1, max_size=2),
    # audio: uploaded files in items, base64 and binary PCM in the buffer, commits and clears
    "audio": st.lists(
        st.one_of(
            _item_frames(_payload_audio), st.builds(to_json, _payload_appends), st.builds(to_json, audio_appends),
            binary_frames.filter(lambda b: len(b) < 8192), st.builds(to_json, audio_commits | audio_clears),
        ),
        min_size=1, max_size=4,
    ),
}  # fmt: skip
