"""The session summary in Redis (``SessionStore.claim_summary`` / ``finish_summary``): the claim is
the session's ``sumlock`` key (SET NX PX: one token at a time, lapsing with its lease), the
summary two fields of its meta hash (``redis_codec.SUMMARY``), written with the claim given back
by one script (``redis_scripts.FINISH_SUMMARY``), so a late summary never replaces a newer one."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from adapters.memory import redis_codec as codec
from adapters.memory import redis_scripts as lua
from assistant.ports import ConversationSummary


@functools.cache
def _sha() -> str:
    return hashlib.sha1(lua.FINISH_SUMMARY.encode()).hexdigest()


async def claim(store: Any, session_id: str, token: str, lease_ms: int) -> bool:
    key = store.keys(session_id)["sumlock"]
    reply = await store._sent(store.pipe.call("SET", key, token, "NX", "PX", int(lease_ms)))
    return reply in ("OK", b"OK", True)


async def finish(
    store: Any, session_id: str, token: str, summary: ConversationSummary | None, created_at: int
) -> bool:
    k = store.keys(session_id)
    keys = [k["meta"], k["msgs"], k["turns"], k["sumlock"]]
    args = [token, str(created_at), str(store.ttl_ms)]
    args += [codec.summary_json(summary), str(summary.upto)] if summary else ["", "0"]
    call = store.pipe.evalsha(_sha(), lua.FINISH_SUMMARY, keys, args)
    return bool(await store._sent(call))
