"""Images end to end on the real models: EfficientNet-Lite0 features, the training-free projector
onto SmolLM2's own token embeddings, spliced into inputs_embeds, through the WebSocket and Redis."""

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data as samples

from adapters.llm.smollm2 import prepare
from adapters.llm.transformers_local import TransformersLocalLM
from adapters.memory.redis import RedisSessionStore
from assistant.config import LLMSettings, Settings

pytestmark = pytest.mark.integration


def png_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


CHELSEA = png_url(samples.chelsea())
COFFEE = png_url(samples.coffee())


@pytest.fixture(scope="module")
def llm():
    path = prepare(Settings().models_dir, progress=False)
    # No KV-cache reuse here: every turn's spliced prompt is computed whole, so it can be checked.
    return TransformersLocalLM.from_path(str(path), kv_cache_sessions=0)


@pytest.fixture
def client(llm, redis_url):
    store = RedisSessionStore.from_url(redis_url)
    app = create_app_for(llm, store)
    with TestClient(app) as client:
        yield client
        client.portal.call(store.aclose)


def create_app_for(llm, store):
    from assistant.server.app import create_app

    return create_app(Settings(llm=LLMSettings(max_new_tokens=32)), llm=llm, store=store)


def item(*parts):
    content = [
        {"type": "input_image", "image_url": p}
        if p.startswith(("data:", "https:"))
        else {"type": "input_text", "text": p}
        for p in parts
    ]
    return {"type": "conversation.item.create", "item": {"content": content}}


def ask(ws, *parts):
    ws.send_json(item(*parts))
    created = ws.receive_json()
    assert created["type"] == "conversation.item.created", created
    ws.send_json({"type": "response.create"})
    while (event := ws.receive_json())["type"] != "response.done":
        pass
    assert event["response"]["status"] in ("completed", "incomplete"), event
    return event["response"]["output"][0]["content"][0]["text"]


def capture_spliced(llm, monkeypatch):
    captured = []
    original = llm._embed_prompt

    def spy(input_ids, *rest):
        embeds = original(input_ids, *rest)
        captured.append(embeds[0].clone())  # (S, H)
        return embeds

    monkeypatch.setattr(llm, "_embed_prompt", spy)
    return captured


def contains_rows(embeds, rows) -> bool:
    """Whether ``rows`` (N, H) stand consecutively in ``embeds`` (S, H)."""
    import torch

    rows = torch.from_numpy(rows).float()
    for start in range(embeds.shape[0] - rows.shape[0] + 1):
        if torch.allclose(embeds[start : start + rows.shape[0]], rows, atol=1e-6):
            return True
    return False


def test_the_default_models_name_what_is_in_the_photo(client):
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        assert "cat" in ask(ws, CHELSEA, "What animal is in this picture?").lower()
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        reply = ask(ws, COFFEE, "What is in this picture?").lower()
    assert any(word in reply for word in ("coffee", "espresso", "cup")), reply


def test_a_follow_up_turn_holds_the_first_images_embeddings_again(client, llm, monkeypatch):
    captured = capture_spliced(llm, monkeypatch)
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        ask(ws, CHELSEA, COFFEE, "Here are two pictures.")
        ask(ws, "What was in the first picture?")
    pipeline = client.app.state.components.orchestrator.vision
    first = client.portal.call(pipeline.embeddings, _part(CHELSEA))
    second = client.portal.call(pipeline.embeddings, _part(COFFEE))
    assert len(captured) == 2
    turn2 = captured[1]
    assert contains_rows(turn2, first) and contains_rows(turn2, second)
    # The images come before the follow-up question's tokens, in order.
    assert turn2.shape[0] > captured[0].shape[0]


def test_a_repeated_image_hits_the_embedding_cache(client):
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        ask(ws, COFFEE, "What is this?")
        pipeline = client.app.state.components.orchestrator.vision
        calls = pipeline.stats.encoder_calls
        hits = pipeline.stats.cache_hits
        ask(ws, COFFEE, "And this one?")
    assert pipeline.stats.encoder_calls == calls  # not encoded again
    assert pipeline.stats.cache_hits >= hits + 2  # this turn's image and the earlier one


def _part(url):
    import hashlib

    from assistant.messages import ImagePart

    raw = base64.b64decode(url.split(",", 1)[1])
    return ImagePart(sha256=hashlib.sha256(raw).hexdigest())


def bomb_png() -> str:
    """A valid 1-bit PNG whose header declares 30,000 x 30,000 pixels (a few KB compressed)."""
    buffer = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_bad_images_get_coded_errors_and_the_socket_stays_usable(client):
    raw = base64.b64decode(COFFEE.split(",", 1)[1])
    truncated = "data:image/png;base64," + base64.b64encode(raw[: len(raw) // 2]).decode()
    text_file = "data:image/png;base64," + base64.b64encode(b"just some text, not a picture").decode()
    with client.websocket_connect("/v1/realtime") as ws:
        ws.receive_json()
        codes = []
        for url in (bomb_png(), truncated, text_file, "https://example.com/cat.png"):
            ws.send_json(item(url, "what is it?"))
            event = ws.receive_json()
            assert event["type"] == "error", event
            codes.append(event["error"]["code"])
        assert codes == ["image_too_many_pixels", "invalid_image", "invalid_image", "image_url_not_allowed"]
        assert "cat" in ask(ws, CHELSEA, "What animal is in this picture?").lower()
