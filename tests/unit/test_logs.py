"""Log lines carry correlation ids and never a key, a client secret, a session id or a query."""

from __future__ import annotations

import json
import logging

import pytest

from assistant.server import logs


@pytest.mark.parametrize(
    "secret",
    ["sk_0123456789abcdef_" + "A" * 32, "pk_0123456789abcdef_" + "b" * 32,
     "cs_eyJhbGciOiJIUzI1NiJ9.eyJ0ZW4iOiJhY21lIn0.sig", "sess_0123456789abcdef0123",
     "Bearer some-static-key-123456", "assistant-secret.cs_abc.def"],
)  # fmt: skip
def test_secrets_are_redacted(secret):
    line = logs.redact(f"connecting with {secret} now")
    assert secret not in line and "<redacted>" in line and line.startswith("connecting with")


def test_a_query_string_is_redacted_but_a_question_is_not():
    line = logs.redact('"WebSocket /v1/realtime?session_id=abc&x=1" [accepted]')
    assert "abc" not in line and "/v1/realtime?<redacted>" in line
    assert logs.redact("is it ready? yes") == "is it ready? yes"


def test_a_session_reference_is_stable_and_reveals_nothing():
    key = b"k" * 32
    ref = logs.reference("sess_0123456789abcdef0123", key)
    assert ref == logs.reference("sess_0123456789abcdef0123", key) and ref.startswith("s-")
    assert "0123456789abcdef" not in ref
    assert ref != logs.reference("sess_0123456789abcdef0124", key)
    assert ref != logs.reference("sess_0123456789abcdef0123", b"other key" * 4)


def test_json_lines_carry_the_correlation_ids(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("info", "json")
        token = logs.request_id.set("req_1"), logs.session_ref.set("s-abc")
        logging.getLogger("assistant.test").info("opened sess_0123456789abcdef0123 for %s", "acme")
        logs.request_id.reset(token[0])
        logs.session_ref.reset(token[1])
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["request_id"] == "req_1" and line["session_ref"] == "s-abc"
    assert line["level"] == "INFO" and line["logger"] == "assistant.test"
    assert "sess_0123456789abcdef0123" not in line["message"] and "acme" in line["message"]
