"""schemathesis against the OpenAPI schema of a real ``assistant serve`` (scripted model, its own
redis-server): every REST route, with cases that fit the schema and cases that do not; no 5xx,
every answer as the schema declares it (``bench/fuzz_rest.py``). ``assistant bench --fuzz`` runs
the same for longer."""

from __future__ import annotations

import pytest

from bench.fuzz import FuzzServer
from bench.fuzz_rest import fuzz_operation, operations, runs, stored_session

pytestmark = pytest.mark.integration

#: Cases per operation and mode: the whole module stays under half a minute here.
EXAMPLES = 40
#: The routes the README documents (the auth routes come on top).
DOCUMENTED = {
    "GET /v1/sessions/{session_id}/messages", "POST /v1/audio/transcriptions", "GET /healthz",
    "GET /readyz", "GET /metrics", "POST /v1/chat/completions", "GET /v1/models",
    "GET /v1/models/{model_id}",
    "POST /v1/knowledge/{kb}/documents", "GET /v1/knowledge/{kb}/documents",
    "DELETE /v1/knowledge/{kb}/documents/{document}", "GET /v1/knowledge/{kb}/search",
    "GET /v1/knowledge", "GET /v1/bot/profile", "PUT /v1/bot/profile",
    "GET /v1/conversations", "GET /v1/conversations/{conversation_id}",
    "POST /v1/conversations/{conversation_id}/handoff",
    "POST /v1/conversations/{conversation_id}/claim",
    "POST /v1/conversations/{conversation_id}/messages",
    "POST /v1/conversations/{conversation_id}/handback",
    "POST /v1/conversations/{conversation_id}/resolve",
    "GET /v1/conversations/{conversation_id}/events",
}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with FuzzServer(tmp_path_factory.mktemp("fuzz-rest")) as server:
        yield server


def test_the_schema_loads_and_lists_every_documented_route(server):
    assert DOCUMENTED <= {operation.label for operation in operations(server.base_url)}


def test_every_route_answers_as_its_schema_says(server, capsys):
    session_id = stored_session(server)
    failures, cases = [], 0
    for operation, negative, fixed in runs(server.base_url, session_id):
        try:
            cases += fuzz_operation(operation, server.base_url, EXAMPLES, negative, fixed)
        except Exception as exc:  # collected: every route is fuzzed, then all failures shown
            failures.append(f"{operation.label} negative={negative} {fixed or ''}:\n{exc}")
    with capsys.disabled():
        print(f"\nfuzz REST: {cases} cases, {len(failures)} failures")
    assert server.alive(), server.log_tail()
    assert not server.log_errors(), server.log_tail()
    assert not failures, "\n\n".join(failures)
    assert cases >= EXAMPLES * len(DOCUMENTED)
