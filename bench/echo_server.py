"""The gateway benchmark's baseline: a bare FastAPI WebSocket server, no Redis, no model.

It speaks the minimum of the real ``/v1/realtime`` protocol: ``session.created`` on connect, and for
each ``conversation.item.create`` + ``response.create`` pair the same number of JSON events, of the
same shape and about the same size, as the real server sends for a short scripted reply
(``conversation.item.created``, ``response.created``, one ``response.output_text.delta`` per word,
``response.output_text.done``, ``response.done``). Each event is built and serialised per turn, as
the real server does, but with plain dicts and ``json.dumps`` instead of pydantic models.

It is run by ``uvicorn.run(app, host=..., port=..., log_level=...)``, the call ``assistant serve``
makes, so both servers get the same uvicorn defaults (uvloop, httptools, the websockets sans-I/O
protocol, permessage-deflate offered)::

    python -m bench.echo_server --port 8001 [--reply TEXT] [--log-level warning] [--workers N]

With ``--workers N``, N worker processes serve the port exactly as ``assistant serve --workers N``
runs the real server's (``assistant.server.workers``).
"""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from bench.common import REPLY


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def _dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def _item(item_id: str, role: str, kind: str, text: str) -> dict[str, Any]:
    return {
        "id": item_id, "object": "realtime.item", "type": "message", "role": role,
        "status": "completed",
        "content": [{"type": kind, "text": text, "transcript": None, "image_sha256": None}],
    }  # fmt: skip


def _response(resp_id: str, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": resp_id, "object": "realtime.response", "status": status, "status_details": None,
        "output": output, "usage": usage,
    }  # fmt: skip


def item_created(event: dict[str, Any]) -> str:
    content = event.get("item", {}).get("content") or [{}]
    text = content[0].get("text", "")
    return _dumps({
        "event_id": _id("event"), "type": "conversation.item.created",
        "previous_item_id": event.get("previous_item_id"),
        "item": _item(event.get("item", {}).get("id") or _id("msg"), "user", "input_text", text),
    })  # fmt: skip


def response_events(reply: str) -> list[str]:
    """``response.created``, the deltas, ``response.output_text.done`` and ``response.done``."""
    resp_id, item_id = _id("resp"), _id("msg")
    words = reply.split(" ")
    frames = [_dumps({
        "event_id": _id("event"), "type": "response.created",
        "response": _response(resp_id, "in_progress", [], None),
    })]  # fmt: skip
    for index, word in enumerate(words):
        frames.append(_dumps({
            "event_id": _id("event"), "response_id": resp_id, "item_id": item_id,
            "output_index": 0, "content_index": 0, "type": "response.output_text.delta",
            "delta": word if index == 0 else f" {word}",
        }))  # fmt: skip
    frames.append(_dumps({
        "event_id": _id("event"), "response_id": resp_id, "item_id": item_id, "output_index": 0,
        "content_index": 0, "type": "response.output_text.done", "text": reply,
    }))  # fmt: skip
    usage = {"input_tokens": 16, "output_tokens": len(words), "total_tokens": 16 + len(words)}
    output = [_item(item_id, "assistant", "output_text", reply)]
    frames.append(_dumps({
        "event_id": _id("event"), "type": "response.done",
        "response": _response(resp_id, "completed", output, usage),
    }))  # fmt: skip
    return frames


def create_echo_app(reply: str = REPLY) -> FastAPI:
    app = FastAPI(title="bench-echo")

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket, session_id: str | None = None) -> None:
        await ws.accept()
        session = {
            "id": session_id or _id("sess"), "object": "realtime.session", "instructions": None,
            "max_output_tokens": None, "temperature": None, "modalities": ["text"],
        }  # fmt: skip
        await ws.send_text(
            _dumps({"event_id": _id("event"), "type": "session.created", "session": session})
        )
        try:
            while True:
                event = json.loads(await ws.receive_text())
                kind = event.get("type")
                if kind == "conversation.item.create":
                    await ws.send_text(item_created(event))
                elif kind == "response.create":
                    for frame in response_events(reply):
                        await ws.send_text(frame)
        except WebSocketDisconnect:
            return

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--reply", default=REPLY)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (uvicorn's)")
    args = parser.parse_args()
    if args.workers > 1:  # as ``assistant serve --workers N`` runs them; the default reply only
        from assistant.server.workers import balanced_workers_supported, serve_balanced

        if balanced_workers_supported():
            serve_balanced("bench.echo_server:create_echo_app", args.host, args.port,
                           args.workers, args.log_level)  # fmt: skip
        else:
            uvicorn.run("bench.echo_server:create_echo_app", factory=True, host=args.host,
                        port=args.port, log_level=args.log_level, workers=args.workers)  # fmt: skip
        return
    app = create_echo_app(args.reply)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
