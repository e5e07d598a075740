"""The image pipeline encodes an image once for all the turns that want it meanwhile, and caches
the result even when the turn that started it goes away (its client hung up): on a busy server
every turn showing an uncached image used to start its own encoding, and each one cancelled with
its connection was never cached, so the image was never cached at all."""

import asyncio
import base64
import io

import numpy as np
import pytest
from PIL import Image

from assistant.messages import PendingImage
from assistant.testing.memory import MemoryStore
from assistant.testing.vision import GatedEncoder
from assistant.vision.pipeline import ImagePipeline


def _png() -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3), 120, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
async def setup():
    encoder = GatedEncoder()
    pipeline = ImagePipeline(encoder, None, MemoryStore())
    part = await pipeline.ingest(PendingImage(source=_png()))
    yield encoder, pipeline, part
    encoder.release.set()


async def test_turns_wanting_the_same_image_share_one_encoding(setup):
    encoder, pipeline, part = setup
    waiting = [asyncio.create_task(pipeline.describe(part)) for _ in range(3)]
    await asyncio.to_thread(encoder.started.wait, 10)
    encoder.release.set()
    texts = await asyncio.gather(*waiting)
    assert texts == ["an image of: cat (90%), dog (10%)"] * 3
    assert encoder.calls == 1 and pipeline.stats.cache_misses == 1


async def test_an_encoding_whose_turn_went_away_is_still_cached(setup):
    encoder, pipeline, part = setup
    gone = asyncio.create_task(pipeline.describe(part))
    await asyncio.to_thread(encoder.started.wait, 10)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    encoder.release.set()
    # A later turn finds the encoding under way or done: the encoder is not called again.
    assert await pipeline.describe(part) == "an image of: cat (90%), dog (10%)"
    assert encoder.calls == 1
    hits = pipeline.stats.cache_hits
    assert await pipeline.describe(part) == "an image of: cat (90%), dog (10%)"
    assert pipeline.stats.cache_hits == hits + 1  # from the cache now
