"""The app in process for tests of the OpenAI-compatible routes: a scripted model, an
in-memory store, a fake speech to text; requests through Starlette's TestClient, or straight into
the app as ASGI (``RawCall``) when the test must hang up mid-stream or run requests at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from assistant.config import LLMSettings, Settings
from assistant.server.app import create_app
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from assistant.testing.speech import FakeSTT

CHAT = "/v1/chat/completions"
LONG_REPLY = " ".join(f"w{i}" for i in range(200))


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


class AppClients:
    """Started TestClients of apps built from settings sections, all closed at the end:

    with AppClients(tmp_path) as make:
        http = make(llm=ScriptedLM("hi"), limits=LimitsSettings(generations=1))
        http.store  # the app's in-memory store
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.clients: list[TestClient] = []

    def __call__(self, llm=None, store=None, **sections) -> TestClient:
        settings = Settings(data_dir=self.data_dir, llm=LLMSettings(adapter="scripted"), **sections)
        store = store or MemoryStore()
        app = create_app(
            settings, llm=llm or ScriptedLM(), store=store, stt=FakeSTT(text="hi there")
        )
        client = TestClient(app)
        client.__enter__()
        client.store = store  # type: ignore[attr-defined]
        self.clients.append(client)
        return client

    def __enter__(self) -> AppClients:
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self.clients:
            client.__exit__(None, None, None)


def events(text: str) -> list[dict | str]:
    out: list[dict | str] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


class RawCall:
    """One request straight into the app (ASGI), as a server hands it over; its client hangs up
    at ``hang_up()`` (or after ``hang_up_after`` body chunks)."""

    def __init__(
        self, app, body: dict, *, key: str | None = None, hang_up_after: int = 0,
        extra_headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.app = app
        self.body = orjson.dumps(body)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        ]
        if key:
            headers.append((b"authorization", f"Bearer {key}".encode()))
        headers += [(k.lower().encode(), v.encode()) for k, v in (extra_headers or {}).items()]
        self.scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": CHAT, "raw_path": CHAT.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000), "headers": headers,
        }  # fmt: skip
        self.hang_up_after = hang_up_after
        self.gone = asyncio.Event()
        self.streaming = asyncio.Event()  # a first text delta came
        self.status: int | None = None
        self.sent: list[bytes] = []

    def hang_up(self) -> None:
        self.gone.set()

    async def __call__(self) -> RawCall:
        requests = [{"type": "http.request", "body": self.body, "more_body": False}]

        async def receive():
            if requests:
                return requests.pop()
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.sent.append(message["body"])
                if len(self.sent) == 2:
                    self.streaming.set()
                if len(self.sent) == self.hang_up_after:
                    self.hang_up()

        await self.app(self.scope, receive, send)
        return self
