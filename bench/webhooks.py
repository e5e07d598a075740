"""``webhooks``: what the durable queue costs a delivery. Through the whole path (``publish`` ->
the Redis queue -> the delivery worker -> a signed POST to a receiver on loopback) against the
same signed POST sent straight with the same httpx sender, in the same run: the latency of one
event at a time (p50 / p99) and the deliveries per second of a burst (the worker's concurrency
against as many direct POSTs at once)."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


class _Receiver:
    """Answers 200 to every POST and tells who waits which delivery came."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    def expect(self, delivery_id: str) -> asyncio.Future[None]:
        return self.waiting.setdefault(delivery_id, asyncio.get_running_loop().create_future())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: httpx reuses the connection
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(
                    line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
                )
                lower = {k.lower(): v for k, v in headers.items()}
                await reader.readexactly(int(lower.get("content-length", "0")))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                self.expect(lower.get("x-assistant-delivery", "")).set_result(None)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.InvalidStateError):
            writer.close()


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


async def _measure(redis_url: str, events: int, burst: int) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from adapters.webhooks.http_sender import HttpxSender
    from adapters.webhooks.redis_queue import RedisWebhookStore
    from assistant.webhooks.service import Webhooks
    from assistant.webhooks.settings import WebhookSettings
    from assistant.webhooks.signing import sign
    from assistant.webhooks.worker import DeliveryWorker

    settings = WebhookSettings(allow_private_addresses=True)
    receiver = _Receiver()
    url = await receiver.start()
    # as the session store's: a pool that waits for a free connection (a burst publishes at once)
    client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(redis_url))
    store = RedisWebhookStore(client, settings)
    sender = HttpxSender()
    worker = DeliveryWorker(store, sender, settings)
    webhooks = Webhooks(store, settings)
    webhooks.on_enqueue = worker.wake
    hook = await webhooks.create("bench", url, ["message.created"])
    body = b'{"type":"message.created","data":{}}'

    async def direct(n: int) -> None:
        delivery_id = f"direct_{n}"
        headers = {"X-Assistant-Delivery": delivery_id, "X-Assistant-Signature": sign(hook.secret, body),
                   "Content-Type": "application/json"}  # fmt: skip
        arrived = receiver.expect(delivery_id)
        await sender.post(url, body, headers, settings.timeout_s)
        await arrived

    async def queued() -> None:
        (delivery,) = await webhooks.publish("bench", "message.created", {"n": 1})
        await receiver.expect(delivery.id)

    worker.start()
    try:
        await direct(-1)
        await queued()  # warm: connections, scripts loaded
        through, straight = [], []
        for n in range(events):  # interleaved, so both see the same machine
            started = time.perf_counter()
            await queued()
            through.append(time.perf_counter() - started)
            started = time.perf_counter()
            await direct(n)
            straight.append(time.perf_counter() - started)
        started = time.perf_counter()
        await asyncio.gather(*(queued() for _ in range(burst)))
        queued_s = time.perf_counter() - started
        gate = asyncio.Semaphore(settings.concurrency)

        async def gated(n: int) -> None:
            async with gate:
                await direct(events + n)

        started = time.perf_counter()
        await asyncio.gather(*(gated(n) for n in range(burst)))
        direct_s = time.perf_counter() - started
    finally:
        await worker.stop()
        await sender.aclose()
        await client.aclose()
        if receiver.server is not None:
            receiver.server.close()
    return {
        "events": events, "burst": burst, "concurrency": settings.concurrency,
        "delivery_p50_ms": _ms(through, 0.5), "direct_p50_ms": _ms(straight, 0.5),
        "delivery_p99_ms": _ms(through, 0.99), "direct_p99_ms": _ms(straight, 0.99),
        "delivery_mean_ms": round(statistics.fmean(through) * 1000, 2),
        "burst_deliveries_per_s": round(burst / queued_s, 1),
        "direct_posts_per_s": round(burst / direct_s, 1),
    }  # fmt: skip


def measure_webhooks(quick: bool = False) -> dict[str, Any]:
    from adapters.memory.embedded_redis import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp(prefix="assistant-bench-webhooks-"))
    redis_server = EmbeddedRedis(tmp).start()
    try:
        return asyncio.run(_measure(redis_server.url, 30 if quick else 200, 100 if quick else 500))
    finally:
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def table_rows(data: dict[str, Any]) -> list[tuple[str, str, Any, Any]]:
    """``(entry, metric, value, baseline)`` rows for ``bench.run``'s table."""
    return [
        ("webhooks", "publish -> received p50 ms (vs direct POST)", data["delivery_p50_ms"],
         data["direct_p50_ms"]),
        ("webhooks", "publish -> received p99 ms (vs direct POST)", data["delivery_p99_ms"],
         data["direct_p99_ms"]),
        ("webhooks", f"burst of {data['burst']}: deliveries/s (vs direct, same concurrency)",
         data["burst_deliveries_per_s"], data["direct_posts_per_s"]),
    ]  # fmt: skip
