"""Image embeddings, cold versus cached: what a cache miss costs against a hit on the real store.

A few sample photos (scikit-image's, or generated ones when it is absent) go through the core's
``ImagePipeline``, as a turn's images do: EfficientNet-Lite0 (the packaged weights) and an
``mlp2x_gelu`` projector to SmolLM2's hidden size (576; random weights, which cost as much as
trained ones), over a ``RedisSessionStore`` on a private ``redis-server`` in a temporary directory.

- cold: the photo's cache entry deleted first (untimed), then ``embeddings(part)``: blob read,
  decode, encode, project, cache write;
- cached: ``embeddings(part)`` answered from the cache (a Redis GET and ``np.load``).

Per photo and repeat both are measured back to back, alternating which goes first; the medians of
the per-image times are reported, with the encoder calls each kind made (the pipeline's counter).
``encode_ms`` and ``project_ms`` split the cold time: the encoder and the projector called alone.

``python -m bench.image [--quick] [--threads=N]`` prints the result as JSON.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HIDDEN_SIZE = 576  # SmolLM2-135M's
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def measure_image(quick: bool = False, *, threads: int = 0) -> dict[str, Any]:
    """Median ms per image, cold and cached, over 2 photos x 3 repeats (quick) or 4 x 7.
    ``threads``: torch threads (0: torch's default). The pipeline runs the encoder in worker
    threads; on a shared 2-core machine 2 torch threads there can be slower than 1."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)

    from adapters.memory.embedded_redis import EmbeddedRedis
    from adapters.vision.efficientnet import EfficientNetLite0Encoder
    from adapters.vision.projector import ProjectorAdapter, build_projector

    photos = _photos(2 if quick else 4)
    repeats = 3 if quick else 7
    encoder = EfficientNetLite0Encoder.from_path()
    torch.manual_seed(0)
    projector = build_projector("mlp2x_gelu", in_dim=1280, hidden_size=HIDDEN_SIZE)
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        with EmbeddedRedis(Path(tmp) / "redis") as server:
            result = asyncio.run(
                _measure(server.url, encoder, ProjectorAdapter(projector), photos, repeats)
            )
    sizes = [f"{p.shape[1]}x{p.shape[0]}" for p in photos.values()]
    result.update(_parts_of_cold(encoder, projector, photos, repeats))
    return {**result, "photos": ",".join(photos), "sizes": ",".join(sizes),
            "threads": torch.get_num_threads()}  # fmt: skip


async def _measure(
    url: str, encoder: Any, projector: Any, photos: dict[str, np.ndarray], repeats: int
) -> dict[str, Any]:
    from adapters.memory.redis import RedisSessionStore
    from assistant.messages import PendingImage
    from assistant.vision.pipeline import ImagePipeline

    store = RedisSessionStore.from_url(url)
    try:
        pipeline = ImagePipeline(encoder, projector, store)
        parts = [await pipeline.ingest(PendingImage(source=_data_url(p))) for p in photos.values()]
        for part in parts:  # warm-up: a process's first passes (and shapes) are slower
            await pipeline.embeddings(part)
        times: dict[str, list[float]] = {"cold": [], "cached": []}
        calls = {"cold": 0, "cached": 0}
        for r in range(repeats):
            for part in parts:
                for kind in ("cold", "cached") if r % 2 == 0 else ("cached", "cold"):
                    if kind == "cold":
                        await _forget(store, part.sha256)  # untimed
                    before = pipeline.stats.encoder_calls
                    started = time.perf_counter()
                    vectors = await pipeline.embeddings(part)  # (N, H)
                    times[kind].append((time.perf_counter() - started) * 1000)
                    calls[kind] += pipeline.stats.encoder_calls - before
    finally:
        await store.aclose()
    cold, cached = statistics.median(times["cold"]), statistics.median(times["cached"])
    return {
        "cold_ms": round(cold, 2),
        "cached_ms": round(cached, 3),
        "speedup": round(cold / cached, 1),
        "encoder_calls_cold": calls["cold"],
        "encoder_calls_cached": calls["cached"],
        "images": len(parts),
        "repeats": repeats,
        "embedding_shape": "x".join(map(str, vectors.shape)),
        "embedding_kb": round(vectors.astype(np.float32).nbytes / 1024, 1),
    }


def _parts_of_cold(
    encoder: Any, projector: Any, photos: dict[str, np.ndarray], repeats: int
) -> dict[str, float]:
    """Median ms of the encoder alone (resize + crop + forward) and of the projector alone, called
    directly on the decoded photos: the rest of ``cold_ms`` is blob read, decode and cache write."""
    encode, project = [], []
    for _ in range(repeats):
        for pixels in photos.values():
            started = time.perf_counter()
            features = encoder._encode_impl(pixels)  # patches (49, 1280)
            encoded = time.perf_counter()
            projector.project(features)  # (49, H)
            encode.append((encoded - started) * 1000)
            project.append((time.perf_counter() - encoded) * 1000)
    return {
        "encode_ms": round(statistics.median(encode), 2),
        "project_ms": round(statistics.median(project), 2),
    }


async def _forget(store: Any, sha256: str) -> None:
    """Delete what the store caches for one image (its blob stays)."""
    pattern = f"{store.key_prefix}:{store.tenant}:cache:*:{sha256}"
    keys = [key async for key in store.client.scan_iter(match=pattern)]
    if keys:
        await store.client.delete(*keys)


def _photos(count: int) -> dict[str, np.ndarray]:
    """``count`` uint8 RGB photos: scikit-image's samples, or random noise without it."""
    try:
        from skimage import data
    except ImportError:
        rng = np.random.default_rng(0)
        return {
            f"generated{i}": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
            for i in range(count)
        }
    return {name: getattr(data, name)() for name in PHOTOS[:count]}


def _data_url(pixels: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


if __name__ == "__main__":
    threads = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--threads=")), 0)
    print(json.dumps(measure_image(quick="--quick" in sys.argv[1:], threads=threads), indent=2))
