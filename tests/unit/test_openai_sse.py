"""The SSE decoder and the chunk reader of the openai_compatible adapter: events come out whole
wherever the bytes are cut, with any line ending."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.llm.openai_sse import SSEDecoder, parse_chunk


def delta(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


event_data = st.lists(
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=12),
    min_size=1, max_size=3,
).map("\n".join)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(event_data.filter(bool), max_size=6),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(0, 400), max_size=12),
)
def test_sse_events_come_out_whole_wherever_the_bytes_are_cut(events, newline, cuts):
    wire = b": keep-alive" + newline + newline
    for data in events:
        for line in data.encode().split(b"\n"):
            wire += b"data: " + line + newline
        wire += b"id: 7" + newline + newline
    decoder, found, start = SSEDecoder(), [], 0
    for cut in sorted({min(c, len(wire)) for c in cuts}) + [len(wire)]:
        found += decoder.feed(wire[start:cut])
        start = cut
    found += decoder.close()
    assert [d.decode() for d in found] == events


def test_an_unfinished_last_event_is_taken_at_the_end_of_the_body():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a": 1}\r') == []
    assert decoder.close() == [b'{"a": 1}']


def test_a_chunk_reads_text_finish_usage_and_errors():
    assert parse_chunk(orjson.dumps(delta("hi", "stop"))).text == "hi"
    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    assert parse_chunk(orjson.dumps(usage)).usage == (5, 2)
    assert parse_chunk(b"[DONE]").done
    assert parse_chunk(b'{"error": {"message": "out of memory"}}').error == "out of memory"
    assert parse_chunk(b'{"choices": [{"delta": {"role": "assistant"}}]}').text == ""
