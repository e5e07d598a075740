"""What images and stored messages cost in memory: stored images are validated without an RGB copy,
pixels for the encoder are shrunk by a whole factor, and the parsed-message cache is bounded by bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from assistant.errors import InvalidRequestError
from assistant.vision.images import decode_image


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_validation_keeps_no_pixels_but_still_refuses_a_truncated_image():
    data = encoded(Image.new("RGB", (300, 200), (10, 200, 30)), "PNG")
    checked = decode_image(data, pixels=False)
    assert checked.pixels is None and (checked.width, checked.height) == (300, 200)
    with pytest.raises(InvalidRequestError) as broken:
        decode_image(data[: len(data) // 2], pixels=False)
    assert broken.value.code == "invalid_image"


@pytest.mark.parametrize(
    ("mode", "fmt", "size"),
    [("1", "PNG", (4096, 2440)), ("RGB", "JPEG", (2000, 1500)), ("P", "GIF", (1800, 1000)),
     ("RGBA", "PNG", (1000, 1000))],
)  # fmt: skip
def test_pixels_are_shrunk_by_a_whole_factor_keeping_the_shorter_side(mode, fmt, size):
    image = Image.new(mode, size, 1 if mode in ("1", "P") else None)
    decoded = decode_image(encoded(image, fmt), min_side=448)
    assert decoded.pixels is not None and decoded.pixels.dtype == np.uint8
    height, width, channels = decoded.pixels.shape
    assert channels == 3 and min(height, width) >= 448
    assert min(height, width) < 2 * 448 or min(size) < 2 * 448  # shrunk as far as it may go
    assert abs(width / height - size[0] / size[1]) < 0.02  # the same shape
    assert (decoded.width, decoded.height) == size  # the original's size is reported


def test_a_small_image_is_not_shrunk():
    pixels = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    decoded = decode_image(encoded(Image.fromarray(pixels), "PNG"), min_side=448)
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_the_parsed_message_cache_is_bounded_by_bytes():
    from adapters.memory.redis_codec import ParsedMessages, dump
    from assistant.messages import Message

    cache = ParsedMessages(size=100, max_bytes=10_000, max_entry_bytes=4_000)
    small = [Message.from_text("user", f"{i} " + "x" * 1_000) for i in range(20)]
    raws = [dump(m) for m in small]
    for raw in raws:
        cache(raw)
    assert cache.bytes <= 10_000 and len(cache._by_raw) < 20
    assert cache.bytes == sum(len(r) for r in cache._by_raw)
    assert raws[-1] in cache._by_raw and raws[0] not in cache._by_raw  # the oldest went first
    big = dump(Message.from_text("user", "y" * 5_000))
    assert cache(big).text == "y" * 5_000 and big not in cache._by_raw  # parsed, not kept
