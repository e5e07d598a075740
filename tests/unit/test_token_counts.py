"""Token counts: a text too long for any prompt is not tokenized, long ones are counted in a worker
thread, and the cache keeps counts, not texts."""

from __future__ import annotations

import threading

from assistant.token_counts import MAX_CHARS_PER_TOKEN, OFF_LOOP_CHARS, TokenCounter


class Recording:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []  # (length, thread name)

    def __call__(self, text: str) -> int:
        self.calls.append((len(text), threading.current_thread().name))
        return len(text.split())


async def test_a_text_longer_than_any_prompt_is_not_tokenized():
    count = Recording()
    counter = TokenCounter(count, context_tokens=1000)
    huge = "word " * (1000 * MAX_CHARS_PER_TOKEN)  # 5 chars a word: more than the context allows
    await counter.prepare([huge])
    assert counter(huge) > 1000  # more than the context, so it is dropped or refused
    assert count.calls == []


async def test_long_texts_are_counted_off_the_event_loop_and_remembered():
    count = Recording()
    counter = TokenCounter(count, context_tokens=100_000)
    long_text, short = "a b " * OFF_LOOP_CHARS, "hello there"
    await counter.prepare([long_text, short])
    assert [length for length, _ in count.calls] == [len(long_text)]
    assert count.calls[0][1] != threading.current_thread().name  # a worker thread
    assert counter(long_text) == 2 * OFF_LOOP_CHARS and len(count.calls) == 1  # remembered
    assert counter(short) == 2 and len(count.calls) == 2  # a short one: counted in place


def test_the_cache_is_bounded_and_holds_no_texts():
    counter = TokenCounter(len, context_tokens=100, size=3)
    texts = [f"text {i}" for i in range(5)]
    for text in texts:
        counter(text)
    assert len(counter._known) == 3
    assert all(isinstance(key, tuple) and not any(isinstance(k, str) for k in key)
               for key in counter._known)  # fmt: skip
