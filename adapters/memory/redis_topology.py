"""Where the session store's Redis is, from the URL in ``ASSISTANT_REDIS_URL``.

    redis://[[user]:password@]host[:port][/db]     one node (``rediss://`` TLS, ``unix:///path``):
                                                   redis-py's own form, the store's pipelined line
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]
                                                   a primary watched by Sentinels (port 26379 when
                                                   left out); the store follows its failovers
    redis+cluster://[[user]:password@]host[:port][,host[:port]...]
                                                   a Redis Cluster from a few seed nodes (6379)

The ``+sentinel`` and ``+cluster`` forms are those of the ``limits`` library (Flask-Limiter,
slowapi): a comma-separated host list in the authority, the Sentinel service name as the path.
Here the path may also carry a database number after the service name (``/mymaster/2``; the
``limits`` library reads the whole path as the service name). ``rediss+sentinel://`` and
``rediss+cluster://`` use TLS (with the system's default trust) to every node.

The user and password of the URL are the data nodes' (the primary and its replicas, or the
cluster's nodes). Sentinels are often run without a password; when theirs is set, give it as
``?sentinel_password=...`` (and ``&sentinel_username=...``); no other query option is taken.
Parsing needs no Redis and connects nowhere: ``parse_redis_url`` only reads the string.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

from assistant.errors import ConfigurationError

Kind = Literal["single", "sentinel", "cluster"]

SINGLE_SCHEMES = ("redis", "rediss", "unix")
_MULTI_SCHEMES: dict[str, tuple[Kind, bool, int]] = {  # scheme -> kind, tls, default port
    "redis+sentinel": ("sentinel", False, 26379),
    "rediss+sentinel": ("sentinel", True, 26379),
    "redis+cluster": ("cluster", False, 6379),
    "rediss+cluster": ("cluster", True, 6379),
}
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
FORMS = (
    "redis://[[user]:password@]host[:port][/db], "
    "redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db], "
    "redis+cluster://[[user]:password@]host:port[,host:port...]"
)


@dataclass(frozen=True)
class RedisTopology:
    """A parsed Redis URL. ``single`` keeps the URL for redis-py; the others are taken apart."""

    kind: Kind
    url: str
    #: Sentinels (``sentinel``) or seed nodes (``cluster``), in the URL's order.
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False

    @property
    def redacted(self) -> str:
        """The URL without its passwords, for logs and error messages."""
        return redact(self.url)


def redact(url: str) -> str:
    """``url`` with any password (of the authority or ``sentinel_password``) replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"{userinfo}@{hosts}"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    hidden = [(k, "***" if "password" in k else v) for k, v in query]
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path, urllib.parse.urlencode(hidden, safe="*"), "")
    )


def parse_redis_url(url: str) -> RedisTopology:
    """The topology ``url`` names; ``ConfigurationError`` saying what is wrong and the forms."""
    url = url.strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in SINGLE_SCHEMES:
        return _single(url)
    if scheme not in _MULTI_SCHEMES:
        raise _bad(url, f"unknown scheme {scheme + '://' if scheme else '(none)'}")
    kind, tls, default_port = _MULTI_SCHEMES[scheme]
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise _bad(url, str(exc)) from None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, password = _userinfo(userinfo)
    nodes = _nodes(url, hosts, default_port)
    options = _query(url, parts.query, allowed=_SENTINEL_OPTIONS if kind == "sentinel" else ())
    if parts.fragment:
        raise _bad(url, "a URL fragment ('#...') means nothing here")
    common = dict(url=url, nodes=nodes, username=username, password=password, tls=tls)
    if kind == "cluster":
        if parts.path.strip("/"):
            raise _bad(url, "a cluster has no databases and no service name: drop the path")
        return RedisTopology(kind="cluster", **common)  # type: ignore[arg-type]
    service_name, db = _service_and_db(url, parts.path)
    return RedisTopology(
        kind="sentinel", service_name=service_name, db=db,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"), **common,  # type: ignore[arg-type]
    )  # fmt: skip


def _single(url: str) -> RedisTopology:
    from redis.asyncio.connection import parse_url  # redis-py's parser: its errors, its form

    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise _bad(url, str(exc)) from None
    path = urllib.parse.urlsplit(url).path.strip("/")
    if not url.lower().startswith("unix") and path and not path.isdigit():  # redis-py ignores it
        raise _bad(url, f"the database {path!r} is not a number")
    return RedisTopology(kind="single", url=url, db=int(parsed.get("db") or 0))


def _userinfo(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    user_text = urllib.parse.unquote(user) or None
    return user_text, (urllib.parse.unquote(password) if colon else None)


def _nodes(url: str, hosts: str, default_port: int) -> tuple[tuple[str, int], ...]:
    nodes = []
    for location in hosts.split(","):
        location = location.strip()
        if not location:
            raise _bad(url, "an empty host in the host list")
        try:
            sub = urllib.parse.urlsplit(f"fake://{location}")
            host, port = sub.hostname, sub.port
        except ValueError as exc:  # a port that is not a number, or out of range
            raise _bad(url, f"bad host:port {location!r} ({exc})") from None
        if not host:
            raise _bad(url, f"bad host:port {location!r}")
        nodes.append((host, port or default_port))
    return tuple(nodes)


def _query(url: str, query: str, *, allowed: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            known = f" (known: {', '.join(allowed)})" if allowed else ""
            raise _bad(url, f"unknown option {name!r}{known}")
        options[name] = value
    return options


def _service_and_db(url: str, path: str) -> tuple[str, int]:
    segments = [urllib.parse.unquote(s) for s in path.strip("/").split("/") if s]
    if not segments:
        raise _bad(url, "no service name: the path names the Sentinel service (/mymaster)")
    if len(segments) > 2:
        raise _bad(url, "the path is /service_name or /service_name/db")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise _bad(url, f"the database {segments[1]!r} is not a number")
        db = int(segments[1])
    return segments[0], db


def _bad(url: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"ASSISTANT_REDIS_URL {redact(url)!r}: {why}; the forms are {FORMS}")


__all__ = ["FORMS", "RedisTopology", "parse_redis_url", "redact"]
