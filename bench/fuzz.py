"""The fuzzer's driver: one WebSocket client of a real server (``bench.fuzz_server``: the process
and the ``/healthz`` probe) that sends generated frames (``bench.fuzz_events``) and checks every
reply. The tests
(``tests/integration/test_fuzz_realtime.py``) and ``assistant bench --fuzz`` both run it.

The properties, checked on every event the server sends and after every case:

- the server process is alive, and the socket stays open (the one documented close of an open
  socket is ``slow_client``, 4008, which a client that reads everything never gets);
- every reply is a JSON object the server's event models accept (``protocol.server``); an
  ``error`` carries a code of the one tree (``assistant.errors.documented_codes``) under a class
  of its ``type``, never ``internal_error`` (a bug that was caught), and a message that is short
  and leaks nothing (no host:port, no Python repr, traceback or file path);
- every case is answered: a sync marker sent after the case's frames comes back in time;
- a valid turn (item + ``response.create`` -> ``response.done`` ``completed``) works afterwards on
  the same socket;
- the event loop never stalls: ``/healthz`` answers within ``HEALTH_BOUND_S`` during the run.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.fuzz_server import HEALTH_BOUND_S, FuzzFailure, FuzzServer, HealthProbe, fuzz_env

__all__ = [
    "HEALTH_BOUND_S", "FuzzFailure", "FuzzServer", "FuzzSocket", "HealthProbe", "Tally", "fuzz_env",
    "fuzz_settings",
]  # fmt: skip

#: How long one case's replies may take (a valid image or sound is decoded and transcribed).
REPLY_TIMEOUT_S = 30.0
#: Close codes of an open socket the protocol documents (README): ``slow_client``.
DOCUMENTED_CLOSES = {4008}
MAX_MESSAGE_CHARS = 2000
#: Right answers to a valid turn in a session the fuzzing filled: the check starts a new one.
SESSION_FULL = {"context_length_exceeded", "session_turn_limit", "session_too_large"}
_FULL = "session full"
#: Frames and events a failure shows (the newest of the socket).
HISTORY = 24
_MARKERS = itertools.count()  # ids of sync markers and valid turns
#: What an error message must not show: addresses, Python reprs and tracebacks, file paths, C
#: library internals (an errno, a C call), quoted bytes.
_LEAKS = re.compile(
    r"\b\d{1,3}(?:\.\d{1,3}){3}:\d+|localhost:\d+|redis://|Traceback|File \"|<[\w.]+ object at 0x"
    r"|\b0x[0-9a-f]{6,}|/site-packages/|\.py\b|\b\w+(?:Error|Exception)\(|\[Errno \d+\]|'<none>'"
    r"|\bb'\\x|\breturned -?\d+\b",
)


def fuzz_settings(examples: int, **extra: Any) -> Any:
    """Hypothesis settings for a live server: no deadline (the server's speed varies), no example
    database (nothing written to the working tree), no health checks about slow or big data."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=examples, deadline=None, database=None,
        suppress_health_check=list(HealthCheck), print_blob=True, **extra,
    )  # fmt: skip


@dataclass
class Tally:
    """What a run did and saw."""

    cases: int = 0
    frames: int = 0
    events: int = 0
    turns: int = 0
    connections: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # server events by type

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases, "frames": self.frames, "server_events": self.events,
            "valid_turns": self.turns, "connections": self.connections,
            "error_codes": dict(self.codes.most_common()),
            "event_types": dict(self.kinds.most_common()),
        }  # fmt: skip


class ErrorCodes:
    """The one tree's codes, each with the ``type`` of the classes that list it."""

    def __init__(self) -> None:
        import assistant.errors as errors

        self.types: dict[str, set[str]] = {}
        for name, codes in errors.documented_codes().items():
            for code in codes:
                self.types.setdefault(code, set()).add(getattr(errors, name).type)

    def check(self, error: dict[str, Any], sent: Callable[[str], bool] = lambda _: False) -> None:
        """``sent(text)``: whether the client sent ``text`` itself (an echo is not a leak)."""
        code, kind, message = error.get("code"), error.get("type"), error.get("message")
        if code not in self.types:
            raise FuzzFailure(f"undocumented error code {code!r}: {error}")
        if kind not in self.types[code]:
            raise FuzzFailure(f"code {code!r} with type {kind!r}, not {self.types[code]}: {error}")
        if code == "internal_error":
            raise FuzzFailure(f"internal_error (a bug the server caught): {error}")
        if not isinstance(message, str) or not message or len(message) > MAX_MESSAGE_CHARS:
            raise FuzzFailure(f"error message missing or over {MAX_MESSAGE_CHARS} chars: {error}")
        leak = next((m for m in _LEAKS.finditer(message) if not sent(m[0])), None)
        if leak:
            raise FuzzFailure(f"error message leaks {leak[0]!r}: {message}")


class FuzzSocket:
    """One WebSocket to the server, reconnected when it closes (which is itself a failure)."""

    def __init__(self, server: FuzzServer, tally: Tally | None = None) -> None:
        from pydantic import TypeAdapter

        from assistant.protocol import ServerEvent

        self.server = server
        self.tally = tally or Tally()
        self.codes = ErrorCodes()
        self._events = TypeAdapter(ServerEvent)
        self._ws: Any = None
        self._exit = contextlib.ExitStack()
        self.session_id = ""
        self.responses_open = 0  # response.created seen minus response.done seen
        self.history: collections.deque[str] = collections.deque(maxlen=HISTORY)
        self.dones: dict[str, dict[str, Any]] = {}  # the newest response.done events, by id

    def fail(self, message: str) -> FuzzFailure:
        """A failure, with the last frames sent and events received on this socket."""
        lines = "\n  ".join(self.history)
        return FuzzFailure(f"{message}\nsession {self.session_id}; last on the socket:\n  {lines}")

    # -- the connection ----------------------------------------------------------------------------

    def connect(self, session_id: str | None = None) -> dict[str, Any]:
        """A new session, or ``session_id`` resumed; the first event (``session.created``)."""
        from urllib.parse import quote

        from websockets.sync.client import connect

        self.close()
        url = self.server.ws_url
        if session_id is not None:
            url += f"?session_id={quote(session_id, safe='')}"
        self._exit = contextlib.ExitStack()
        self._ws = self._exit.enter_context(
            connect(url, max_size=None, open_timeout=10, close_timeout=2)
        )
        self.tally.connections += 1
        self.responses_open = 0
        first = self.receive()
        if first.get("type") == "session.created":
            self.session_id = first["session"]["id"]
        elif session_id is None:
            raise self.fail(f"the first event is not session.created: {first}")
        return first

    def resume(self, session_id: str) -> bool:
        """Connect with ``?session_id=``: True when that session was resumed; False when it got
        the documented answer for an unknown one, ``session_not_found`` and close code 4404."""
        from websockets.exceptions import ConnectionClosed

        first = self.connect(session_id)
        if first.get("type") == "session.created":
            if session_id == "":  # ``?session_id=`` with nothing: a new session
                return False
            if first["session"]["id"] != session_id:
                raise self.fail(f"asked for {session_id!r}, got {first}")
            return True
        if (first.get("error") or {}).get("code") != "session_not_found":
            raise self.fail(f"an unknown session got {first}")
        try:
            extra = self._ws.recv(timeout=REPLY_TIMEOUT_S)
        except ConnectionClosed as exc:
            if exc.rcvd is None or exc.rcvd.code != 4404:
                raise self.fail(f"an unknown session closed with {exc.rcvd}") from None
        else:
            raise self.fail(f"an unknown session's socket went on: {extra[:200]!r}")
        self.close()
        return False

    def ensure_open(self) -> None:
        if self._ws is None:
            self.connect()

    def close(self) -> None:
        if self._ws is not None:
            self._ws = None
            self._exit.close()

    def _closed(self, exc: Exception) -> FuzzFailure:
        code = getattr(getattr(exc, "rcvd", None), "code", None)
        self.close()
        alive = self.server.alive()
        where = "" if alive else f"; the server process died:\n{self.server.log_tail()}"
        if code in DOCUMENTED_CLOSES:
            return self.fail(f"closed with {code} although every event was read{where}")
        return self.fail(f"the socket closed ({exc!r}){where}\n{self.server.log_tail(2500)}")

    # -- frames out, events in ---------------------------------------------------------------------

    def send(self, frame: str | bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self._ws.send(frame)
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        self.tally.frames += 1
        self.history.append(f"-> {frame[:300]!r}" + (f" ({len(frame)} long)" if len(frame) > 300 else ""))

    def _sent_text(self, text: str) -> bool:
        return any(text in line for line in self.history if line.startswith("->"))

    def send_event(self, event: dict[str, Any]) -> None:
        self.send(json.dumps(event))

    def receive(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The next event, checked; at most ``timeout_s`` (``REPLY_TIMEOUT_S``) away."""
        timeout_s = REPLY_TIMEOUT_S if timeout_s is None else timeout_s
        from websockets.exceptions import ConnectionClosed

        try:
            raw = self._ws.recv(timeout=timeout_s)
        except TimeoutError:
            alive = "alive" if self.server.alive() else "dead"
            raise self.fail(f"no event for {timeout_s:g} s (server {alive})") from None
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        self.tally.events += 1
        self.history.append(f"<- {raw[:300]}")
        try:
            return self.check_event(raw)
        except FuzzFailure as exc:
            raise self.fail(str(exc)) from None

    def check_event(self, raw: str | bytes) -> dict[str, Any]:
        if not isinstance(raw, str):
            raise FuzzFailure(f"a binary frame from the server: {raw[:80]!r}")
        try:
            event = json.loads(raw)
        except ValueError:
            raise FuzzFailure(f"not JSON: {raw[:200]}") from None
        try:
            self._events.validate_python(event)
        except ValueError as exc:
            raise FuzzFailure(f"not a server event of the protocol: {raw[:300]}\n{exc}") from None
        kind = event["type"]
        self.tally.kinds[kind] += 1
        if kind == "error":
            self.codes.check(event["error"], self._sent_text)
            self.tally.codes[event["error"]["code"]] += 1
        elif kind == "response.created":
            self.responses_open += 1
        elif kind == "response.done":
            self.responses_open -= 1
            self.dones[event["response"]["id"]] = event
            if len(self.dones) > HISTORY:
                self.dones.pop(next(iter(self.dones)))
        return event

    def sync(self) -> list[dict[str, Any]]:
        """Send a marker (an unknown event with a fresh id) and read up to its error: every frame
        sent before it has had its synchronous answer. Returns the events read."""
        marker = f"sync-{next(_MARKERS)}"
        self.send_event({"type": "fuzz.sync", "event_id": marker})
        events = []
        while True:
            event = self.receive()
            events.append(event)
            error = event.get("error") or {}
            if error.get("event_id") == marker:
                if error.get("code") != "unknown_event":
                    raise self.fail(f"the marker got {error}")
                return events

    def exchange(self, frames: list[str | bytes]) -> None:
        """One case: its frames, then the sync marker."""
        self.ensure_open()
        for frame in frames:
            self.send(frame)
        self.sync()
        self.tally.cases += 1

    def check_turn(self) -> dict[str, Any]:
        """A valid turn on this socket (``check_turn``)."""
        return check_turn(self)


# -- the valid turn --------------------------------------------------------------------------------


def check_turn(sock: FuzzSocket) -> dict[str, Any]:
    """A valid turn on ``sock``: item + response.create -> its ``response.done`` ``completed``.
    A response still running (a fuzzed one, or one the server VAD started) is waited for and the
    create sent again."""
    sock.ensure_open()
    nonce = f"turn-{next(_MARKERS)}"
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    sock.send_event({"type": "conversation.item.create", "item": item, "event_id": nonce})
    for attempt in range(20):
        create_id = f"{nonce}-create-{attempt}"
        response = {"instructions": "Answer.", "max_output_tokens": 64}
        sock.send_event({"type": "response.create", "response": response, "event_id": create_id})
        response_id = _created(sock, nonce, create_id)
        if response_id is None:
            while sock.responses_open > 0:  # until every response started on it is done
                sock.receive()
            continue
        done = None if response_id is _FULL else _done(sock, response_id)
        if done is None:  # the fuzzed session is full, or its turn too long: a new one
            sock.close()
            return check_turn(sock)
        sock.tally.turns += 1
        return done
    raise sock.fail("response.create was refused 20 times: response_in_progress")


def _created(sock: FuzzSocket, nonce: str, create_id: str) -> str | None:
    """The id of the response ``create_id`` started, or None when it was refused because one was
    in progress. It is the last ``response.created`` before the marker sent after it: the create
    is handled before the marker, and one a spoken turn started earlier would have made it
    refused."""
    marker = f"{create_id}-sync"
    sock.send_event({"type": "fuzz.sync", "event_id": marker})
    created, refused = None, False
    while True:
        event = sock.receive()
        error = event.get("error") or {}
        if error.get("event_id") == nonce:
            if error.get("code") in SESSION_FULL:
                return _FULL
            raise sock.fail(f"the valid item was refused: {error}")
        if error.get("event_id") == create_id:
            if error.get("code") != "response_in_progress":
                raise sock.fail(f"the valid response.create was refused: {error}")
            refused = True
        if event["type"] == "response.created":
            created = event["response"]["id"]
        if error.get("event_id") == marker:
            if not refused and created is None:
                raise sock.fail("response.create was neither refused nor answered")
            return None if refused else created


def _done(sock: FuzzSocket, response_id: str) -> dict[str, Any] | None:
    """``response_id``'s ``response.done``; None when the prompt did not fit the context (the
    current turn, all the user items since the last reply, is too long: a right answer)."""
    while response_id not in sock.dones:
        sock.receive()
    response = sock.dones[response_id]["response"]
    error = (response.get("status_details") or {}).get("error") or {}
    if error.get("code") in SESSION_FULL:
        return None
    if response["status"] != "completed":
        raise sock.fail(f"the valid turn ended {response}")
    return sock.dones[response_id]
