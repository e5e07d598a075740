"""``assistant keys create | list | revoke``: a tenant's API keys, managed straight in Redis (the
operator's way in; a tenant's admins use ``/v1/admin/keys`` with an admin key).

Redis is ``ASSISTANT_REDIS_URL``, else the private redis-server of the data directory: the one
a running ``assistant serve`` started, or one started for the command and stopped after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assistant.config import Settings


def add_commands(commands: Any, add: Any) -> None:
    keys = add("keys", "Manage API keys: create, list, revoke (straight in Redis).")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--tenant", required=True, help="the tenant the key belongs to")
    create.add_argument("--scope", action="append", choices=["admin", "agent", "client"],
                        help="secret keys: a scope (repeatable; default client)")  # fmt: skip
    create.add_argument("--publishable", action="store_true",
                        help="a publishable key (pk_...) for web pages; needs --origin")  # fmt: skip
    create.add_argument("--origin", action="append", default=[],
                        help="publishable keys: a page origin allowed, https://host[:port]")  # fmt: skip
    create.add_argument("--name", default="", help="a note for people")
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant", help="only this tenant's")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", help="the id (the 16 hex digits after sk_ / pk_)")
    keys.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {"data_dir": Path(args.data_dir).expanduser()} if args.data_dir else {}
    return asyncio.run(_run(args, Settings(**overrides)))  # type: ignore[arg-type]


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.auth.secret import server_secret
    from assistant.messages import now_ms
    from assistant.registry import build_key_store, build_session_store
    from assistant.server.auth_routes import make_key

    with _redis_url(settings) as url:
        store = build_session_store(settings, redis_url=url)
        keys = build_key_store(settings, store)
        try:
            if args.action == "create":
                kind = "publishable" if args.publishable else "secret"
                pepper = server_secret(settings.auth.secret, settings.data_dir)
                record, key = await make_key(
                    keys, pepper, args.tenant, kind, tuple(args.scope or ["client"]),
                    tuple(args.origin), args.name,
                )  # fmt: skip
                print(key)
                print(f"id {record.id}, tenant {record.tenant}, {kind}, scopes "
                      f"{','.join(record.scopes) or '-'}; this key is not shown again",
                      file=sys.stderr)  # fmt: skip
                if record.identity_secret:
                    print(f"identity secret (sign user ids with it): {record.identity_secret}",
                          file=sys.stderr)  # fmt: skip
            elif args.action == "list":
                for record in await keys.list(args.tenant):
                    _print_key(record.public(), args.json)
            else:
                revoked = await keys.revoke(args.key_id, now_ms())
                if revoked is None:
                    print(f"error: no key {args.key_id!r}", file=sys.stderr)
                    return 2
                print(f"revoked {revoked.id} ({revoked.tenant})")
        finally:
            await store.aclose()
    return 0


def _print_key(key: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(key))
        return
    state = "revoked" if key["revoked_at"] else "active"
    what = ",".join(key["scopes"]) or ",".join(key["origins"]) or "-"
    print(f"{key['id']}  {key['tenant']}  {key['kind']}  {state}  {what}  {key['name']}")


@contextlib.contextmanager
def _redis_url(settings: Settings) -> Iterator[str]:
    if settings.redis_url:
        yield settings.redis_url
        return
    running = _running_embedded_url(settings.redis_dir)
    if running is not None:
        yield running
        return
    from assistant.registry import start_embedded_redis

    embedded = start_embedded_redis(settings)
    try:
        yield embedded.url
    finally:
        embedded.stop()


def _running_embedded_url(redis_dir: Path) -> str | None:
    """The URL of the private redis-server a running ``assistant serve`` holds on this data
    directory (its port read off the process's command line; Linux)."""
    try:
        pid = int((redis_dir / "redis.pid").read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if b"--port" not in argv or not argv[0].endswith(b"redis-server"):
        return None
    return f"redis://127.0.0.1:{int(argv[argv.index(b'--port') + 1])}/0"
