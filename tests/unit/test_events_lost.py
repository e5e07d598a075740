"""A client resuming from a sequence number its session's stream no longer keeps (trimmed to
``handoff.stream_maxlen``) is told so, on the app in process (the in-memory store trims as
Redis does): the realtime connection sends an ``events_lost`` error after ``session.created``,
then the events kept, and stays usable; the agents' event stream answers 404 ``events_lost``
(read the conversation again, follow from its ``last_seq``); a resume within the window is not."""

from __future__ import annotations

from assistant.handoff.settings import HandoffSettings
from tests.support.openai_app import AppClients


def _trimmed(http) -> tuple[str, list[str]]:
    """A session whose stream dropped its first events: (its id, the seqs of those kept)."""
    components = http.app.state.components
    session = http.portal.call(components.orchestrator.open_session)
    store = components.handoff.handoff.conversations
    for n in range(130):
        http.portal.call(store.publish, session.id, {"type": "test", "n": n})
    kept = http.portal.call(store.events, session.id, "0", 1000)
    assert len(kept) == 100  # the fake trims exactly
    return session.id, [seq for seq, _ in kept]


def test_a_resume_from_before_the_window_is_told_and_the_connection_goes_on(tmp_path):
    with AppClients(tmp_path) as make:
        http = make(handoff=HandoffSettings(stream_maxlen=100))
        session_id, kept = _trimmed(http)
        gone = "1-0"  # before the oldest kept
        url = f"/v1/realtime?session_id={session_id}&after={gone}"
        with http.websocket_connect(url) as ws:
            assert ws.receive_json()["type"] == "session.created"
            error = ws.receive_json()
            assert error["type"] == "error" and error["error"]["code"] == "events_lost"
            ws.send_json({"type": "session.update", "session": {"instructions": "be brief"}})
            assert ws.receive_json()["type"] == "session.updated"  # usable
        sse = http.get(f"/v1/conversations/{session_id}/events", params={"after": gone})
        assert sse.status_code == 404 and sse.json()["error"]["code"] == "events_lost"
        with http.websocket_connect(f"/v1/realtime?session_id={session_id}&after={kept[-1]}") as ws:
            assert ws.receive_json()["type"] == "session.created"
            ws.send_json({"type": "session.update", "session": {"instructions": "be brief"}})
            assert ws.receive_json()["type"] == "session.updated"  # no error before it


def test_a_malformed_after_is_refused_as_a_bad_request_not_a_server_failure(tmp_path):
    import pytest
    from starlette.websockets import WebSocketDisconnect

    with AppClients(tmp_path) as make:
        http = make()
        with http.websocket_connect("/v1/realtime?after=yesterday") as ws:
            error = ws.receive_json()
            assert error["error"]["code"] == "invalid_request"
            assert error["error"]["param"] == "after"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert closed.value.code == 1008  # policy: do not retry as it is (1011: server failed)
