import pytest

from assistant.errors import ContextLengthError
from assistant.messages import Message
from assistant.prompt import OMITTED_NOTE, PromptBudget, build_prompt, current_turn_start


def words(text: str) -> int:
    return len(text.split())


def conversation(turns: int) -> list[Message]:
    history = []
    for i in range(turns):
        history.append(Message.from_text("user", f"question {i} " + "pad " * 8))
        history.append(Message.from_text("assistant", f"answer {i} " + "pad " * 8))
    return history


def test_everything_fits():
    history = conversation(2) + [Message.from_text("user", "now what")]
    built = build_prompt("be nice", history, PromptBudget(tokens=1000, per_message=1), words)
    roles = [m.role for m in built.prompt.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert built.dropped == 0
    assert built.prompt.messages[-1].text == "now what"
    assert built.tokens == sum(words(m.text) + 1 for m in built.prompt.messages)


def test_oldest_turns_are_dropped_first_and_the_system_prompt_and_current_turn_kept():
    history = conversation(10) + [Message.from_text("user", "the current question")]
    budget = PromptBudget(tokens=60, per_message=1)
    built = build_prompt("be nice", history, budget, words)
    texts = [m.text for m in built.prompt.messages]
    assert texts[0].startswith("be nice") and OMITTED_NOTE in texts[0]
    assert texts[-1] == "the current question"
    assert built.dropped > 0
    assert built.tokens <= budget.tokens
    kept = texts[1:-1]
    # What is kept is the newest part of the history, in order.
    assert kept == [m.text for m in history[:-1]][-len(kept):]
    assert "answer 9" in kept[-1]


def test_current_turn_that_does_not_fit_is_an_error():
    history = [Message.from_text("user", "word " * 100)]
    with pytest.raises(ContextLengthError) as info:
        build_prompt("sys", history, PromptBudget(tokens=50, per_message=1), words)
    assert info.value.code == "context_length_exceeded"


def test_current_turn_is_every_message_after_the_last_reply():
    history = conversation(1) + [Message.from_text("user", "a"), Message.from_text("user", "b")]
    assert current_turn_start(history) == 2
    built = build_prompt("sys", history, PromptBudget(tokens=1000), words)
    # Two user items of one turn reach the model as one user message.
    assert built.prompt.messages[-1].text == "a\nb"


# -- PromptCache: the next turn's prompt from the last one ---------------------------------------


def _grow(rng, history, n):
    for _ in range(n):
        role = rng.choice(["user", "user", "assistant", "system"])
        history.append(Message.from_text(role, " ".join(["w"] * rng.randint(1, 12))))


def test_the_cache_builds_what_build_prompt_builds_as_a_conversation_grows():
    import random

    from assistant.prompt import PromptCache

    rng = random.Random(7)
    cache = PromptCache()
    for trial in range(40):
        history: list[Message] = [Message.from_text("user", "first question")]
        budget = PromptBudget(tokens=rng.choice([60, 150, 10_000]), per_message=2)
        for step in range(12):
            try:
                expected = build_prompt("be nice", history, budget, words, cache_key=f"s{trial}")
            except ContextLengthError:
                with pytest.raises(ContextLengthError):
                    cache.build(f"s{trial}", "be nice", history, budget, words)
                break
            got = cache.build(f"s{trial}", "be nice", history, budget, words)
            assert got == expected, (trial, step)
            _grow(rng, history, rng.randint(1, 3))
    assert cache.extended > 100  # most turns were built from the previous prompt


def test_the_cache_starts_over_when_the_history_is_not_the_previous_one_grown():
    from assistant.prompt import PromptCache

    cache = PromptCache()
    budget = PromptBudget(tokens=10_000, per_message=1)
    history = conversation(3) + [Message.from_text("user", "q")]
    cache.build("s", "be nice", history, budget, words)
    # The window slid (the oldest message is gone), the instructions changed, a new session:
    for instructions, h in (("be nice", history[1:]), ("be terse", history), ("be nice", history[:2])):
        assert cache.build("s", instructions, h, budget, words) == build_prompt(
            instructions, h, budget, words, cache_key="s"
        )
    assert cache.extended == 0
