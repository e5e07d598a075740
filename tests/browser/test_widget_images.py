"""Images in the widget: a photo pasted from the clipboard reaches the real default models
(EfficientNet-Lite0 labels, SmolLM2) and the reply is about it; images from the file button and
a drop are downscaled in the browser to the server's limits and the widget's 1568 px, sent as
JPEG, shown as thumbnails, and shown again after a reload (found by their SHA-256)."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect
from skimage import data as samples

from tests.support.browser import WidgetPage, shot
from tests.support.server import ServerProcess, link_prepared_models, serve_env

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def gradient(width: int, height: int) -> bytes:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    pixels = np.concatenate([np.broadcast_to(x, (height, width, 1)),
                             np.broadcast_to(y, (height, width, 1)),
                             np.full((height, width, 1), 128, np.float32)], axis=2)  # fmt: skip
    return png(pixels.astype(np.uint8))


def decoded(url: str) -> Image.Image:
    head, data = url.split(",", 1)
    assert head == "data:image/jpeg;base64", head
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    """The real default models: SmolLM2-135M-Instruct and EfficientNet-Lite0."""
    data_dir = tmp_path_factory.mktemp("widget-models")
    link_prepared_models(data_dir)
    with ServerProcess(serve_env(data_dir, ASSISTANT_LLM__MAX_NEW_TOKENS="24")) as server:
        yield server


def test_a_pasted_photo_gets_a_reply_about_it(model_server, browser):
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"],
                                  viewport={"width": 1280, "height": 800})  # fmt: skip
    try:
        widget = WidgetPage(context.new_page())
        widget.goto(model_server.url("/"))
        widget.open()
        photo = base64.b64encode(png(samples.chelsea())).decode()
        widget.page.evaluate(
            """async (b64) => {
                 const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                 const blob = new Blob([bytes], {type: 'image/png'});
                 await navigator.clipboard.write([new ClipboardItem({'image/png': blob})]);
               }""",
            photo,
        )
        box = widget.page.locator("textarea")
        box.focus()
        widget.page.keyboard.press("Control+V")  # a real paste, from the clipboard
        expect(widget.page.locator(".attachment img")).to_have_count(1)
        box.fill("What animal is in this picture?")
        box.press("Enter")
        [reply] = widget.wait_replies(1, timeout_s=120)
        assert "cat" in reply.lower(), reply
        assert widget.page.locator(".msg.user img.thumb").count() == 1
        assert widget.foreign_requests(model_server.base_url) == []
        shot(widget.page, "image-pasted")
    finally:
        context.close()


DROP = """async ([b64, name]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: 'image/png'}));
  const panel = document.querySelector('assistant-widget').shadowRoot.querySelector('.panel');
  for (const type of ['dragenter', 'dragover', 'drop']) {
    panel.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  }
}"""


def test_images_from_the_button_and_a_drop_are_downscaled_and_kept(scripted_server, widget, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(gradient(3000, 2000))
    widget.goto(scripted_server.url("/"))
    widget.open()
    widget.page.locator("input[type=file]").set_input_files(str(big))
    expect(widget.page.locator(".attachment img")).to_have_count(1)
    small = base64.b64encode(gradient(800, 600)).decode()
    widget.page.evaluate(DROP, [small, "small.png"])
    expect(widget.page.locator(".attachment img")).to_have_count(2)
    widget.type("Two pictures")
    [reply] = widget.wait_replies(1)  # the scripted model is text only: it reads their labels
    assert reply.startswith("You said: [Image 1: an image of:") and reply.endswith("Two pictures")

    [event] = widget.record.events_sent("conversation.item.create")
    parts = event["item"]["content"]
    assert [p["type"] for p in parts] == ["input_image", "input_image", "input_text"]
    first, second = (decoded(p["image_url"]) for p in parts[:2])
    assert first.size == (1568, 1045)  # the longer side to 1568 px
    assert second.size == (800, 600)  # never enlarged
    thumbs = widget.page.locator(".msg.user img.thumb")
    assert thumbs.count() == 2
    assert all(src.startswith("data:image/jpeg") for src in
               thumbs.evaluate_all("(nodes) => nodes.map((n) => n.src)"))  # fmt: skip

    session = widget.status()["sessionId"]
    stored = httpx.get(scripted_server.url(f"/v1/sessions/{session}/messages"), timeout=10).json()
    assert [p["type"] for p in stored["data"][0]["content"]] == ["image", "image", "text"]
    widget.page.reload()
    widget.wait("() => window.__probe && window.__probe.readyAt !== null")
    widget.wait_replies(1)
    assert widget.page.locator(".msg.user img.thumb").count() == 2  # found again by SHA-256
    assert widget.page.locator(".msg.user .thumb.missing").count() == 0
