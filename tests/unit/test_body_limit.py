"""Request bodies are refused (413 ``request_too_large``) as they stream in, declared or not."""

from __future__ import annotations

import io
import wave

import numpy as np
from fastapi.testclient import TestClient

from assistant.config import Settings, VoiceSettings
from assistant.server.app import create_app
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from assistant.testing.speech import FakeSTT


def client(tmp_path, **voice) -> TestClient:
    settings = Settings(data_dir=tmp_path, voice=VoiceSettings(**voice))
    app = create_app(settings, llm=ScriptedLM("hi"), store=MemoryStore(), stt=FakeSTT(text="ok"))
    return TestClient(app)


def wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16_000)
        out.writeframes(np.zeros(int(seconds * 16_000), "<i2").tobytes())
    return buffer.getvalue()


def test_a_chunked_upload_is_refused_as_soon_as_it_passes_the_limit(tmp_path):
    sent = []

    def chunks():  # no Content-Length: the body streams in pieces
        for _ in range(64):
            sent.append(1)
            yield b"x" * 65_536

    with client(tmp_path, max_upload_bytes=100_000) as http:
        answer = http.post(
            "/v1/audio/transcriptions", content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )  # fmt: skip
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "request_too_large"
        small = http.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav(0.5))})
        assert small.status_code == 200 and small.json()["text"] == "ok"


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(tmp_path):
    with client(tmp_path) as http:
        answer = http.post("/v1/realtime/client_secrets", content=b"{}",
                           headers={"content-length": str(5 * 1024 * 1024),
                                    "content-type": "application/json"})  # fmt: skip
        assert answer.status_code == 413


async def test_the_body_is_read_only_up_to_the_limit():
    """At the ASGI level: the app reading the whole body gets no more than the limit."""
    from assistant.server.body_limit import BodyLimit, upload_body_limit

    pulled, sent = [], []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 65_536, "more_body": True}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        while (await receive())["more_body"]:  # an app that buffers everything
            pass

    limited = BodyLimit(app, {"/v1/audio/transcriptions": upload_body_limit(100_000)})
    scope = {"type": "http", "path": "/v1/audio/transcriptions", "headers": [], "method": "POST"}
    await limited(scope, receive, send)
    assert len(pulled) == 3  # 64 KiB x 3 passes 100,000 + 64 KiB of form overhead
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413


def test_a_pattern_entry_limits_the_paths_it_matches_whole():
    """A route with a path parameter (``/v1/knowledge/{kb}/documents``) is a compiled pattern."""
    import re

    from assistant.server.body_limit import DEFAULT_LIMIT, BodyLimit

    limits = BodyLimit(None, {re.compile(r"/v1/kb/[^/]+/docs"): 10, "/v1/kb/x/docs": 20})  # type: ignore[arg-type]
    assert limits.limit("/v1/kb/help/docs") == 10
    assert limits.limit("/v1/kb/x/docs") == 20  # an exact entry first
    assert limits.limit("/v1/kb/help/docs/a.md") == DEFAULT_LIMIT  # the whole path must match
    assert limits.limit("/v1/kb/a/b/docs") == DEFAULT_LIMIT
