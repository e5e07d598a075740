"""The load generator: a separate process (so its CPU is not the server's event loop) that opens
``--sessions`` WebSocket sessions to ``--url`` and runs text turns on them, driven over
stdin/stdout by ``bench.drive`` (for ``bench.gateway``), one JSON object per line.
``--sessions`` is the concurrency: that many sessions run turns at once; with ``--rounds R`` each
of them goes on with a fresh session after its ``--turns``, so a level needs no overlong
conversation to run many turns (all ``sessions x rounds`` connections are opened before the
measured phase, so it times turns, not handshakes)::

    -> {"event": "ready", ...}   every session is connected (and warmed up by one turn)
    <- go                        run ``--turns`` measured turns on every session, all at once
    -> {"event": "result", ...}  latencies (ms), start/end (time.monotonic, machine-wide), errors
    <- close                     close every connection, then exit

A turn is ``conversation.item.create`` + ``response.create`` sent back to back; its latency is from
sending ``response.create`` to receiving ``response.done``. Frames are not JSON-parsed (a substring
test finds ``response.done``) to keep the client's CPU per turn small. Every wait is bounded by
``--timeout``; a session whose turn fails or times out stops and is counted in ``failed_sessions``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.common import PROMPT, raise_nofile_limit

_TEXT = [{"type": "input_text", "text": PROMPT}]
_USER_ITEM = {"type": "message", "role": "user", "content": _TEXT}
ITEM = json.dumps({"type": "conversation.item.create", "item": _USER_ITEM})
RESPONSE = json.dumps({"type": "response.create"})


class TurnFailed(Exception):
    pass


async def turn(ws: ClientConnection, timeout_s: float, tally: list[int]) -> float:
    """One text turn; returns its latency in ms and adds the frames and bytes received to
    ``tally``. Raises ``TurnFailed`` unless the response completed."""
    async with asyncio.timeout(timeout_s):
        await ws.send(ITEM)
        started = time.perf_counter()
        await ws.send(RESPONSE)
        while True:
            frame = await ws.recv()
            tally[0] += 1
            tally[1] += len(frame)
            if '"response.done"' in frame:  # type: ignore[operator]
                if '"status":"completed"' not in frame:  # type: ignore[operator]
                    raise TurnFailed(str(frame)[:300])
                return (time.perf_counter() - started) * 1000


async def open_session(url: str, gate: asyncio.Semaphore, timeout_s: float) -> ClientConnection:
    async with gate, asyncio.timeout(timeout_s):
        ws = await connect(
            url, compression=None, ping_interval=None, close_timeout=2, max_size=2**24,
            open_timeout=timeout_s,
        )  # fmt: skip
        first = await ws.recv()
        if '"session.created"' not in first:  # type: ignore[operator]
            await ws.close()
            raise TurnFailed(f"expected session.created, got {str(first)[:300]}")
        return ws


class Load:
    """The sessions of one load-generator process and what their turns measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sockets: list[ClientConnection] = []
        self.latencies: list[float] = []
        self.tally = [0, 0]  # frames, characters received in measured turns
        self.failed_sessions = 0
        self.errors: dict[str, int] = {}
        self.first_error: str | None = None

    def _error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        if self.first_error is None:
            self.first_error = repr(exc)[:300]
            print(f"loadgen: first error: {self.first_error}", file=sys.stderr)

    async def _open_one(self, gate: asyncio.Semaphore) -> None:
        try:
            ws = await open_session(self.args.url, gate, self.args.timeout)
        except Exception as exc:  # noqa: BLE001 - counted, and the session stops
            self.failed_sessions += 1
            self._error(exc)
            return
        self.sockets.append(ws)

    async def connect_all(self) -> dict[str, Any]:
        started = time.monotonic()
        gate = asyncio.Semaphore(self.args.connect_concurrency)
        total = self.args.sessions * self.args.rounds
        await asyncio.gather(*(self._open_one(gate) for _ in range(total)))
        return {"connected": len(self.sockets), "connect_s": time.monotonic() - started}

    async def _run_slot(
        self, sockets: list[ClientConnection], turns: int, out: list[float], tally: list[int]
    ) -> None:
        """One concurrent slot: ``turns`` turns on each of its sessions, one after the other; a
        session whose turn fails is closed and left out from then on."""
        for ws in sockets:
            for _ in range(turns):
                try:
                    out.append(await turn(ws, self.args.timeout, tally))
                except Exception as exc:  # noqa: BLE001 - counted, and the session stops
                    self.failed_sessions += 1
                    self._error(exc)
                    self.sockets.remove(ws)
                    await _close(ws)
                    break

    async def _run_slots(self, turns: int, out: list[float], tally: list[int]) -> None:
        slots, sockets = self.args.sessions, list(self.sockets)
        await asyncio.gather(
            *(self._run_slot(sockets[i::slots], turns, out, tally) for i in range(slots))
        )

    async def warm_up(self) -> None:
        """One unmeasured turn on every session, ``--sessions`` at once (as measured turns run):
        the server's pools grow to the concurrency before the clock starts."""
        await self._run_slots(1, [], [0, 0])

    async def run_turns(self) -> dict[str, Any]:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        await self._run_slots(self.args.turns, self.latencies, self.tally)
        ended = time.monotonic()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        return {
            "start": started, "end": ended, "latencies_ms": self.latencies,
            "frames": self.tally[0], "chars": self.tally[1],
            "failed_sessions": self.failed_sessions, "errors": self.errors,
            "first_error": self.first_error, "client_cpu_s": cpu,
        }  # fmt: skip

    async def close_all(self) -> None:
        gate = asyncio.Semaphore(self.args.connect_concurrency)

        async def close(ws: ClientConnection) -> None:
            async with gate:
                await _close(ws)

        await asyncio.gather(*(close(ws) for ws in self.sockets))


async def _close(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), 5)


def _say(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def _command(reader: asyncio.StreamReader, timeout_s: float) -> str:
    line = await asyncio.wait_for(reader.readline(), timeout_s)
    return line.decode().strip()


async def main_async(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    load = Load(args)
    try:
        connected = await load.connect_all()
        if args.warmup:
            await load.warm_up()
        failed, first_error = load.failed_sessions, load.first_error
        _say("ready", **connected, failed_sessions=failed, first_error=first_error)
        if await _command(reader, args.idle_timeout) != "go":
            return 1
        _say("result", **await load.run_turns())
        await _command(reader, args.idle_timeout)  # "close", or EOF when the driver went away
    finally:
        await load.close_all()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=1, help="sessions per slot, one by one")
    parser.add_argument("--turns", type=int, default=0, help="measured turns per session")
    parser.add_argument("--warmup", action="store_true", help="first one unmeasured turn each")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per connect or turn")
    parser.add_argument("--idle-timeout", type=float, default=600.0, help="seconds per command")
    parser.add_argument("--connect-concurrency", type=int, default=100)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    raise_nofile_limit()
    args = parse_args(argv)
    try:
        import uvloop  # the server side runs on uvloop too (uvicorn's default when installed)
    except ImportError:
        return asyncio.run(main_async(args))
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
