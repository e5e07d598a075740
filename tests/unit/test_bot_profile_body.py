"""The bot profile's PUT body is validated strictly: a JSON true is not a threshold."""

import pytest
from pydantic import ValidationError

from assistant.server.knowledge_schema import BotProfileBody


@pytest.mark.parametrize("body", [
    {"threshold": True}, {"threshold": "0.3"}, {"handoff_after_unanswered": 2.5},
    {"handoff_after_unanswered": False}, {"name": 7}, {"handoff_phrases": "talk to a person"},
])  # fmt: skip
def test_a_value_of_another_type_is_refused(body):
    with pytest.raises(ValidationError):
        BotProfileBody.model_validate(body)


def test_numbers_and_lists_of_their_types_are_taken():
    body = BotProfileBody.model_validate(
        {"threshold": 1, "handoff_after_unanswered": 3, "handoff_phrases": ["a person"]}
    )
    assert body.model_dump(exclude_unset=True) == {
        "threshold": 1.0, "handoff_after_unanswered": 3, "handoff_phrases": ["a person"]
    }
