"""Stop strings, applied by the language model port to any adapter's stream: the text that comes
out is the same however the model's text is split into deltas, ends before the first stop
string, and only a tail that could still start a stop string is ever held back."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.ports import GenerationOptions, Prompt, PromptMessage
from assistant.ports.stops import StopScan, cut_at_stop
from assistant.testing.language_models import DeltasLM

# A small alphabet, so that stop strings and their near misses turn up in the texts often.
TEXT = st.text(alphabet="ab \n", max_size=40)
STOPS = st.lists(st.text(alphabet="ab \n", min_size=1, max_size=4), max_size=4)
PROMPT = Prompt((PromptMessage("user", "hi"),))


@st.composite
def split(draw, text: str) -> list[str]:
    """``text`` cut into deltas at places hypothesis picks (some empty)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def run(deltas: list[str], stops: tuple[str, ...], max_new_tokens: int = 256):
    async def collect():
        generation = DeltasLM(deltas).stream(
            PROMPT, GenerationOptions(max_new_tokens=max_new_tokens, stop=stops)
        )
        out = [delta async for delta in generation]
        return out, generation.finish_reason

    return asyncio.run(collect())


@settings(max_examples=300, deadline=None)
@given(data=st.data(), text=TEXT, stops=STOPS)
def test_any_split_of_the_text_gives_the_same_reply(data, text, stops):
    deltas = data.draw(split(text))
    out, finish = run(deltas, tuple(stops))
    expected, found = cut_at_stop(text, stops)
    assert "".join(out) == expected
    assert finish == "stop"  # a stop string, or the model's own end
    assert all(out)  # no empty deltas go out
    if found:
        assert not any(stop in expected for stop in stops if stop)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), text=TEXT, stops=STOPS)
def test_only_a_possible_start_of_a_stop_string_is_held_back(data, text, stops):
    scan = StopScan(stops)
    seen, out = "", ""
    for delta in data.draw(split(text)):
        seen += delta
        out += scan.feed(delta)
        if scan.hit:
            break
        held = seen[len(out) :]
        assert seen.startswith(out)
        assert held == "" or any(s.startswith(held) and s != held for s in stops)
    if not scan.hit:
        out += scan.flush()
    assert out == cut_at_stop(text, stops)[0]


def test_the_stop_string_that_ends_first_cuts_the_text():
    assert cut_at_stop("xabcx", ["abc", "b"]) == ("xa", True)  # "b" is complete first
    assert cut_at_stop("xabx", ["b", "ab"]) == ("x", True)  # both end there: the longer
    assert cut_at_stop("hello", ["z"]) == ("hello", False)


def test_a_stop_string_ends_the_generation_as_stop_not_length():
    out, finish = run(["one", " two", " th", "ree", " four"], ("three",), max_new_tokens=4)
    assert "".join(out) == "one two " and finish == "stop"
    out, finish = run(["one", " two", " three"], ("four",), max_new_tokens=2)
    assert "".join(out) == "one two" and finish == "length"


def test_the_model_is_not_asked_for_more_once_a_stop_string_came():
    lm = DeltasLM(["a", "STOP", "b", "c", "d"])
    lm_deltas = lm.deltas

    async def collect():
        generation = lm.stream(PROMPT, GenerationOptions(stop=("STOP",)))
        out = [delta async for delta in generation]
        return out, generation.usage.output_tokens

    out, tokens = asyncio.run(collect())
    assert out == ["a"] and tokens == 2 < len(lm_deltas)
