"""A native VLM checkpoint end to end: a tiny random LLaVA saved to a directory is configured as the
language model (``adapter="transformers_vlm"``, ``model=<dir>``), the app builds it through the
registry, and images sent over the WebSocket reach it as pixels; the history lands in real Redis.

Random weights make the reply gibberish: what is checked is that it streams, completes and is
stored beside the user's image."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from adapters.llm.transformers_vlm import TransformersVLM
from adapters.memory.redis import RedisSessionStore
from assistant.config import LLMSettings, Settings
from tests.support.tiny_llava import IMAGE_TOKENS, save_tiny_llava

pytestmark = pytest.mark.integration


def png_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def noise_png(seed: int, shape=(48, 64, 3)) -> str:
    return png_url(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))  # (H, W, 3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture
def client(checkpoint, redis_url):
    from assistant.server.app import create_app

    store = RedisSessionStore.from_url(redis_url)
    settings = Settings(
        llm=LLMSettings(adapter="transformers_vlm", model=str(checkpoint), max_new_tokens=8)
    )
    app = create_app(settings, store=store)  # the language model is built from the settings
    with TestClient(app) as client:
        yield client
        client.portal.call(store.aclose)


def item(*parts: str) -> dict:
    content = [
        {"type": "input_image", "image_url": p}
        if p.startswith("data:")
        else {"type": "input_text", "text": p}
        for p in parts
    ]
    return {"type": "conversation.item.create", "item": {"content": content}}


def ask(ws, *parts: str) -> tuple[list[str], dict]:
    """Send an item and ask for a response: the text deltas and the ``response.done`` event."""
    ws.send_json(item(*parts))
    created = ws.receive_json()
    assert created["type"] == "conversation.item.created", created
    ws.send_json({"type": "response.create"})
    deltas = []
    while (event := ws.receive_json())["type"] != "response.done":
        assert event["type"] != "error", event
        if event["type"] == "response.output_text.delta":
            deltas.append(event["delta"])
    return deltas, event


def test_a_saved_tiny_llava_is_served_end_to_end(client):
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        deltas, done = ask(ws, noise_png(1), "What is in this image?")
    llm = client.app.state.components.llm
    assert isinstance(llm, TransformersVLM) and llm.capabilities.images
    assert deltas, "no response.output_text.delta arrived"
    response = done["response"]
    assert response["status"] in ("completed", "incomplete"), response
    reply = response["output"][0]["content"][0]["text"]
    assert reply == "".join(deltas)
    assert response["usage"]["input_tokens"] > IMAGE_TOKENS  # the image's tokens were in the prompt

    stored = client.get(f"/v1/sessions/{session_id}/messages").json()["data"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    user_types = [part["type"] for part in stored[0]["content"]]
    assert user_types == ["image", "text"]
    assert stored[1]["content"][0]["text"] == reply


def test_two_images_then_a_follow_up_turn(client):
    with client.websocket_connect("/v1/realtime") as ws:
        session_id = ws.receive_json()["session"]["id"]
        first, done = ask(ws, noise_png(2), noise_png(3, (32, 32, 3)), "Compare the two pictures.")
        assert first and done["response"]["status"] in ("completed", "incomplete")
        two_images = done["response"]["usage"]["input_tokens"]
        second, done = ask(ws, "And the first one?")
        assert second and done["response"]["status"] in ("completed", "incomplete")
        # The follow-up's prompt holds the earlier images again (as pixels), and more text.
        assert done["response"]["usage"]["input_tokens"] > two_images > 2 * IMAGE_TOKENS
    stored = client.get(f"/v1/sessions/{session_id}/messages").json()["data"]
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert [p["type"] for p in stored[0]["content"]] == ["image", "image", "text"]
