"""``assistant chat``: a terminal client for a running server. Type a line, see the reply stream in;
Ctrl-C during a reply cancels it, Ctrl-C or Ctrl-D at the prompt quits."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Sequence
from urllib.parse import urlencode

import websockets


def _event(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields})


def user_message(text: str) -> str:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return _event("conversation.item.create", item=item)


async def _read_line(prompt: str) -> str | None:
    """``input()`` in a daemon thread, so Ctrl-C at the prompt ends the program at once."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str | None] = loop.create_future()

    def read() -> None:
        try:
            line: str | None = input(prompt)
        except EOFError:
            line = None
        loop.call_soon_threadsafe(lambda: answer.done() or answer.set_result(line))

    threading.Thread(target=read, daemon=True).start()
    return await answer


async def _stream_reply(ws: websockets.ClientConnection, out: object = sys.stdout) -> dict:
    """Print deltas until ``response.done``; return that event. Errors are printed to stderr."""
    while True:
        event = json.loads(await ws.recv())
        kind = event["type"]
        if kind == "response.output_text.delta":
            print(event["delta"], end="", flush=True, file=out)  # type: ignore[call-overload]
        elif kind == "error":
            error = event["error"]
            print(f"\n[error {error['code']}] {error['message']}", file=sys.stderr)
        elif kind == "response.done":
            print(file=out)  # type: ignore[call-overload]
            return event


async def _turn(ws: websockets.ClientConnection, text: str) -> dict:
    await ws.send(user_message(text))
    await ws.send(_event("response.create"))
    reply = asyncio.create_task(_stream_reply(ws))
    try:
        return await asyncio.shield(reply)
    except asyncio.CancelledError:
        await ws.send(_event("response.cancel"))
        return await reply


async def run_chat(
    url: str,
    *,
    session_id: str | None = None,
    instructions: str | None = None,
    message: Sequence[str] | None = None,
) -> int:
    if session_id:
        url = f"{url}{'&' if '?' in url else '?'}{urlencode({'session_id': session_id})}"
    try:
        ws = await websockets.connect(url, max_size=None)
    except (OSError, websockets.InvalidHandshake) as exc:
        print(f"cannot connect to {url}: {exc}", file=sys.stderr)
        return 1
    async with ws:
        first = json.loads(await ws.recv())
        if first["type"] == "error":
            print(f"[error {first['error']['code']}] {first['error']['message']}", file=sys.stderr)
            return 1
        sid = first["session"]["id"]
        print(f"session {sid} (resume with: assistant chat --session {sid})", file=sys.stderr)
        if instructions:
            await ws.send(_event("session.update", session={"instructions": instructions}))
        if message:
            for text in message:
                done = await _turn(ws, text)
                if done["response"]["status"] == "failed":
                    return 1
            return 0
        while True:
            line = await _read_line("you> ")
            if line is None:
                return 0
            if line.strip():
                await _turn(ws, line)
