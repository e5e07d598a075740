"""Webhook requests over httpx: no redirects followed (a redirect could lead anywhere, past the
URL check), no proxy or ``.netrc`` from the environment, the answer's body not read (only its
status counts)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"webhooks need httpx: pip install httpx ({exc})") from exc

from assistant.ports.webhooks import SendResult, WebhookSender


class HttpxSender(WebhookSender):
    name = "httpx"
    errors = (httpx.TransportError,)

    def __init__(self) -> None:
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> SendResult:
        request = self._client.build_request("POST", url, content=body, headers=dict(headers),
                                             timeout=timeout_s)  # fmt: skip
        async with asyncio.timeout(timeout_s):  # httpx's bounds each read, this the whole attempt
            response = await self._client.send(request, stream=True)
            await response.aclose()
        return SendResult(status_code=response.status_code)

    async def aclose(self) -> None:
        await self._client.aclose()


def build(settings: object) -> HttpxSender:
    return HttpxSender()
