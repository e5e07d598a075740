"""Human handoff on two real ``assistant serve`` processes over one real redis-server: worker A
runs the real SmolLM2 and holds the customer's WebSocket, worker B (the scripted model, never
asked) serves the agent's REST. The customer asks for a person on A; the agent on B lists the
conversation, reads its history, claims it, replies; the reply reaches the customer's socket live
(through the session's Redis Stream); the bot stays silent while held; handed back, the bot
answers the next message. The customer's socket drops and resumes with ``?after=`` (nothing
missed, nothing twice). Every route keeps to the agent key's tenant and needs the agent scope."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.integration.test_webhooks_server import SECRET, new_key, started
from tests.support.server import link_prepared_models, serve_env

pytestmark = pytest.mark.integration


def env(tmp_path, redis_url: str, **settings: str) -> dict[str, str]:
    defaults = {"ASSISTANT_REDIS_URL": redis_url, "ASSISTANT_AUTH__OPEN": "false",
                "ASSISTANT_AUTH__SECRET": SECRET, "ASSISTANT_LLM__MAX_NEW_TOKENS": "12"}  # fmt: skip
    return serve_env(tmp_path, **{**defaults, **settings})


async def until(ws, kind: str, seen: list[dict] | None = None) -> dict:
    """The next event of ``kind`` (those before it appended to ``seen``)."""
    async with asyncio.timeout(60):
        while True:
            event = json.loads(await ws.recv())
            if seen is not None:
                seen.append(event)
            if event["type"] == kind:
                return event


async def say(ws, text: str) -> list[dict]:
    """A user turn and a response; every event up to response.done."""
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                },
            }
        )
    )
    await ws.send(json.dumps({"type": "response.create"}))
    seen: list[dict] = []
    await until(ws, "response.done", seen)
    return seen


def reply_text(events: list[dict]) -> str:
    done = [e for e in events if e["type"] == "response.done"][-1]
    return done["response"]["output"][0]["content"][0]["text"]


@pytest.fixture
async def servers(tmp_path, redis_url):
    link_prepared_models(tmp_path / "a")
    a = await started(env(tmp_path / "a", redis_url))
    b = await started(env(tmp_path / "b", redis_url, ASSISTANT_LLM__ADAPTER="scripted"))
    try:
        yield a, b
    finally:
        await asyncio.to_thread(a.stop)
        await asyncio.to_thread(b.stop)


async def test_a_customer_on_one_worker_and_an_agent_on_another(servers, redis_url):
    a, b = servers
    customer_key = await new_key(redis_url, "acme", "client")
    agent_key = await new_key(redis_url, "acme", "agent")
    other_agent = await new_key(redis_url, "globex", "agent")
    headers = {"Authorization": f"Bearer {customer_key}"}
    agent = httpx.AsyncClient(base_url=b.base_url, headers={"Authorization": f"Bearer {agent_key}"})
    globex = httpx.AsyncClient(base_url=b.base_url,
                               headers={"Authorization": f"Bearer {other_agent}"})  # fmt: skip
    customer_as_agent = httpx.AsyncClient(base_url=b.base_url, headers=headers)
    async with agent, globex, customer_as_agent:
        ws = await websockets.connect(f"{a.ws_url}/v1/realtime", additional_headers=headers)
        created = json.loads(await ws.recv())
        session_id = created["session"]["id"]
        assert created["session"]["status"] == "bot"
        first = await say(ws, "Hello, what do you sell?")
        assert reply_text(first)  # the real model answered

        # an agent's console on B follows the tenant's queue from where the list left it
        listed = (await agent.get("/v1/conversations", params={"status": "waiting_human"})).json()
        assert listed["data"] == []
        queued = asyncio.create_task(first_sse(agent, "/v1/queue/events", listed["last_seq"],
                                               "conversation.status.updated"))  # fmt: skip
        # the customer asks for a person: a phrase of the profile (the defaults)
        held = await say(ws, "I want to talk to a person please")
        change = await asyncio.wait_for(queued, 30)
        assert change["conversation"] == session_id and change["status"] == "waiting_human"
        assert change["reason"] == "customer_request" and "origin" not in change
        assert reply_text(held) == "A person from our team will answer you here shortly."
        queue = (await agent.get("/v1/conversations", params={"status": "waiting_human"})).json()
        assert [c["id"] for c in queue["data"]] == [session_id]
        assert queue["data"][0]["reason"] == "customer_request"
        assert "customer: I want to talk to a person please" in queue["data"][0]["summary"]

        # another tenant's agent, and a client key, get nothing anywhere
        assert (await globex.get("/v1/conversations")).json()["data"] == []
        for method, path, body in ROUTES:
            answer = await globex.request(method, path.format(session_id), json=body)
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json()["error"]["code"] == "session_not_found"
            denied = await customer_as_agent.request(method, path.format(session_id), json=body)
            assert denied.status_code == 403, (path, denied.text)

        detail = (await agent.get(f"/v1/conversations/{session_id}")).json()
        texts = [m["content"][0].get("text") for m in detail["messages"]]
        assert texts[0] == "Hello, what do you sell?" and len(texts) == 3  # the notice: not stored
        claimed = await agent.post(f"/v1/conversations/{session_id}/claim")
        assert claimed.status_code == 200 and claimed.json()["status"] == "human"
        again = await agent.post(f"/v1/conversations/{session_id}/claim")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "conversation_status_conflict"
        statuses = [e["status"] for e in held if e["type"] == "conversation.status.updated"]
        status = await until(ws, "conversation.status.updated")
        statuses.append(status["status"])
        while status["status"] != "human":
            status = await until(ws, "conversation.status.updated")
            statuses.append(status["status"])
        assert statuses == ["waiting_human", "human"]  # its own request's change too
        assert status["agent"].startswith("agent:")

        posted = await agent.post(f"/v1/conversations/{session_id}/messages",
                                  json={"text": "Hi, I am Sam. How can I help?"})  # fmt: skip
        assert posted.status_code == 201, posted.text
        live = await until(ws, "conversation.item.added")
        assert live["item"]["content"][0]["text"] == "Hi, I am Sam. How can I help?"
        assert live["item"]["author"] == status["agent"] and live["item"]["role"] == "assistant"
        last_seen = live["seq"]

        # the agent follows the conversation live on B (server-sent events from a seq)
        followed = asyncio.create_task(first_sse_item(agent, session_id, last_seen))
        silent = await say(ws, "My parcel 1234 never came")
        sse = await asyncio.wait_for(followed, 30)
        assert sse["item"]["content"][0]["text"] == "My parcel 1234 never came"
        assert "origin" not in sse
        assert reply_text(silent) == "A person from our team will answer you here shortly."
        assert not [e for e in silent if e["type"] == "response.output_text.delta"][1:]

        # the socket drops; the agent writes meanwhile; a resume from the last seq gets it once
        await ws.close()
        await agent.post(f"/v1/conversations/{session_id}/messages",
                         json={"text": "Sorry about that, resending now."})  # fmt: skip
        ws = await websockets.connect(
            f"{a.ws_url}/v1/realtime?session_id={session_id}&after={last_seen}",
            additional_headers=headers,
        )
        resumed = json.loads(await ws.recv())
        assert resumed["session"]["status"] == "human"
        missed: list[dict] = []
        await until(ws, "conversation.item.added", missed)  # the customer's own message first
        await until(ws, "conversation.item.added", missed)
        texts = [e["item"]["content"][0]["text"] for e in missed if "item" in e]
        assert texts == ["My parcel 1234 never came", "Sorry about that, resending now."]

        back = await agent.post(f"/v1/conversations/{session_id}/handback")
        assert back.status_code == 200 and back.json()["status"] == "bot"
        await until(ws, "conversation.status.updated")
        answered = await say(ws, "Thanks. What are your opening hours?")
        assert reply_text(answered) != "A person from our team will answer you here shortly."
        stored = (await agent.get(f"/v1/conversations/{session_id}")).json()
        authors = [m.get("author") for m in stored["messages"] if m["role"] == "assistant"]
        assert authors.count(status["agent"]) == 2 and authors[-1] is None
        await ws.close()


async def first_sse_item(http: httpx.AsyncClient, session_id: str, after: str) -> dict:
    """The first ``conversation.item.added`` of the session's event stream after ``after``."""
    path = f"/v1/conversations/{session_id}/events"
    return await first_sse(http, path, after, "conversation.item.added")


async def first_sse(http: httpx.AsyncClient, path: str, after: str, kind: str) -> dict:
    """The first event of ``kind`` of the server-sent events at ``path`` after ``after``."""
    async with http.stream("GET", path, params={"after": after}, timeout=30) as response:
        assert response.status_code == 200
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == kind:
                return json.loads(line[len("data: ") :])
    raise AssertionError("the stream ended")


ROUTES = [
    ("GET", "/v1/conversations/{}", None),
    ("POST", "/v1/conversations/{}/handoff", None),
    ("POST", "/v1/conversations/{}/claim", None),
    ("POST", "/v1/conversations/{}/messages", {"text": "hi"}),
    ("POST", "/v1/conversations/{}/handback", None),
    ("POST", "/v1/conversations/{}/resolve", None),
    ("GET", "/v1/conversations/{}/events", None),
    ("GET", "/v1/conversations/{}/images/" + "0" * 64, None),
]
