"""Which URLs a webhook may call. A webhook makes the server send requests where a tenant's admin
says, so it must not reach what only the server can reach (SSRF): the scheme must be one of
``webhooks.allowed_schemes`` (http and https), and every address the host resolves to must be a
public one, unless ``webhooks.allow_private_addresses`` (loopback, private ranges, link-local such
as cloud metadata at 169.254.169.254, multicast, reserved). The check runs when the subscription
is made and again before every attempt (a name may resolve elsewhere later)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from assistant.errors import InvalidRequestError, shown
from assistant.webhooks.settings import WebhookSettings

MAX_URL_CHARS = 2048
RESOLVE_TIMEOUT_S = 5.0


def check_url(url: str, settings: WebhookSettings) -> tuple[str, int]:
    """The URL's (host, port) when its form is acceptable; ``invalid_webhook_url`` otherwise."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequestError(f"a webhook URL has at most {MAX_URL_CHARS} characters",
                                  code="invalid_webhook_url", param="url")  # fmt: skip
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequestError(f"not a URL: {shown(url)}", code="invalid_webhook_url",
                                  param="url") from None  # fmt: skip
    if parts.scheme not in settings.allowed_schemes:
        allowed = ", ".join(settings.allowed_schemes)
        raise InvalidRequestError(
            f"a webhook URL's scheme must be one of {allowed}, got {shown(parts.scheme)}",
            code="invalid_webhook_url", param="url",
        )  # fmt: skip
    if not parts.hostname:
        raise InvalidRequestError(f"a webhook URL needs a host: {shown(url)}",
                                  code="invalid_webhook_url", param="url")  # fmt: skip
    if parts.username or parts.password:
        raise InvalidRequestError("a webhook URL may not carry credentials (user:password@)",
                                  code="invalid_webhook_url", param="url")  # fmt: skip
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)  # fmt: skip


async def check_destination(url: str, settings: WebhookSettings) -> None:
    """``check_url``, then every address of its host public (or private ones allowed):
    ``webhook_url_not_allowed`` when one is not, ``invalid_webhook_url`` when it does not
    resolve."""
    host, port = check_url(url, settings)
    if settings.allow_private_addresses:
        return
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, TimeoutError) as exc:
        why = str(exc) or "timed out"
        raise InvalidRequestError(f"the webhook's host {shown(host)} does not resolve ({why})",
                                  code="invalid_webhook_url", param="url") from None  # fmt: skip
    for info in infos:
        address = str(info[4][0])
        if not is_public(address):
            raise InvalidRequestError(
                f"the webhook's host {shown(host)} is a private, loopback or reserved address "
                f"({address}); set ASSISTANT_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES=true to allow it",
                code="webhook_url_not_allowed", param="url",
            )  # fmt: skip
