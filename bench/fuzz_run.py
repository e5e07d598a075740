"""Running the fuzzer: the suites of ``bench.fuzz_events`` through hypothesis on one socket,
random sequences of valid events as a hypothesis state machine (a connection per sequence), and
``run_fuzz``, the ``fuzz`` entry of ``assistant bench`` (``--fuzz``), which runs them all against
one server process until ``examples`` cases per suite are done (or ``minutes`` have passed, with
new random seeds each round).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from bench import fuzz_events as ev
from bench.fuzz import FuzzFailure, FuzzServer, FuzzSocket, HealthProbe, Tally, fuzz_settings
from bench.fuzz_media import b64, pcm_chunks
from bench.fuzz_rest import run_rest, stored_session

#: A valid turn is run after every this many cases of a suite (and after its last one).
TURN_EVERY = 25


def run_suite(sock: FuzzSocket, name: str, examples: int) -> None:
    """``examples`` cases of suite ``name`` on ``sock``; raises the first failure (shrunk)."""

    @fuzz_settings(examples)
    @given(frames=ev.SUITES[name])
    def case(frames: list[str | bytes]) -> None:
        sock.exchange(frames)
        if sock.tally.cases % TURN_EVERY == 0:
            sock.check_turn()

    with _quiet_reprs():
        case()
    sock.check_turn()


def run_resumes(sock: FuzzSocket, examples: int) -> None:
    """``examples`` connections with ``?session_id=``: random text (an unknown session: its
    documented error and close), the socket's own session (resumed) and near misses of it."""
    sock.ensure_open()
    own = sock.session_id
    near = st.builds(lambda cut, tail: own[:cut] + tail, st.integers(0, len(own)), st.text(max_size=4))
    # At most 500 characters: a request line over 8 KiB is not answered at all (uvicorn's bug).
    ids = st.one_of(st.text(max_size=500), st.just(own), near)

    @fuzz_settings(examples)
    @given(session_id=ids)
    def case(session_id: str) -> None:
        if sock.resume(session_id) != (session_id == own):
            raise FuzzFailure(f"?session_id={session_id!r} resumed the wrong way")
        sock.tally.cases += 1

    with _quiet_reprs():
        case()
    assert sock.resume(own)
    sock.check_turn()


# -- random sequences of valid events -------------------------------------------------------------

_item_texts = st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs", "P"]), min_size=1, max_size=60)
_valid_items = st.builds(
    lambda texts, role, turn_id: {
        "type": "message", "role": role, "content": [{"type": "input_text", "text": t} for t in texts],
        **({"id": turn_id} if turn_id else {}),
    },
    st.lists(_item_texts, min_size=1, max_size=3),
    st.sampled_from(["user", "user", "system"]),
    st.none() | st.sampled_from(["t1", "t2", "t3"]),  # a repeated turn id: stored once
)  # fmt: skip
_response_configs = st.fixed_dictionaries(
    {}, optional={"max_output_tokens": st.integers(1, 64), "temperature": st.floats(0, 2),
                  "instructions": st.text(max_size=40)},
)  # fmt: skip
_session_configs = st.fixed_dictionaries(
    {},
    optional={
        "instructions": st.text(max_size=40),
        "max_output_tokens": st.integers(1, 64),
        "temperature": st.floats(0, 2),
        "turn_detection": st.none() | st.fixed_dictionaries(
            {"type": st.just("server_vad")},
            optional={"silence_duration_ms": st.integers(100, 1000), "create_response": st.booleans(),
                      "interrupt_response": st.booleans(), "threshold": st.floats(0.1, 1.0)},
        ),
    },
)  # fmt: skip


class RealtimeMachine(RuleBasedStateMachine):
    """Valid events in random orders on a fresh connection; the server must answer each sync and
    still run a valid turn at the end. ``server`` and ``tally`` are set by ``run_sequences``."""

    server: FuzzServer
    tally: Tally

    def __init__(self) -> None:
        super().__init__()
        self.sock = FuzzSocket(self.server, self.tally)
        self.sock.connect()

    @rule(item=_valid_items)
    def item_create(self, item: dict[str, Any]) -> None:
        self.sock.send_event({"type": "conversation.item.create", "item": item})

    @rule(config=_response_configs)
    def response_create(self, config: dict[str, Any]) -> None:
        self.sock.send_event({"type": "response.create", "response": config})

    @rule(by_id=st.booleans())
    def response_cancel(self, by_id: bool) -> None:
        event: dict[str, Any] = {"type": "response.cancel"}
        if by_id:
            event["response_id"] = "resp_unknown"
        self.sock.send_event(event)

    @rule(config=_session_configs)
    def session_update(self, config: dict[str, Any]) -> None:
        self.sock.send_event({"type": "session.update", "session": config})

    @rule(chunk=pcm_chunks.filter(lambda b: len(b) % 2 == 0), binary=st.booleans())
    def audio_append(self, chunk: bytes, binary: bool) -> None:
        if binary:
            self.sock.send(chunk)
        else:
            self.sock.send_event({"type": "input_audio_buffer.append", "audio": b64(chunk)})

    @rule(clear=st.booleans())
    def audio_commit_or_clear(self, clear: bool) -> None:
        kind = "input_audio_buffer.clear" if clear else "input_audio_buffer.commit"
        self.sock.send_event({"type": kind})

    @rule(frame=st.one_of(ev.event_frames, ev.text_frames))
    def garbage(self, frame: str) -> None:
        self.sock.send(frame)

    @rule()
    def sync(self) -> None:
        self.sock.sync()

    @invariant()
    def server_alive(self) -> None:
        if not self.server.alive():
            raise FuzzFailure(f"the server process died:\n{self.server.log_tail()}")

    def teardown(self) -> None:
        try:
            if self.sock._ws is not None:
                self.sock.sync()
                self.sock.check_turn()
                self.tally.cases += 1
        finally:
            self.sock.close()


def run_sequences(server: FuzzServer, tally: Tally, examples: int, steps: int = 20) -> None:
    """``examples`` random sequences of up to ``steps`` events, each on its own connection."""
    machine = type("Machine", (RealtimeMachine,), {"server": server, "tally": tally})
    with _quiet_reprs():
        run_state_machine_as_test(machine, settings=fuzz_settings(examples, stateful_step_count=steps))


@contextlib.contextmanager
def _quiet_reprs() -> Iterator[None]:
    """Hypothesis warns when a case's repr is big (a generated image is): they are meant to be."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Generating overly large repr")
        yield


# -- assistant bench --fuzz ------------------------------------------------------------------------

SUITE_NAMES = (*ev.SUITES, "resumes", "sequences")


def run_fuzz(examples: int = 2000, minutes: float | None = None) -> dict[str, Any]:
    """Every suite, ``examples`` cases each (sequences: a tenth as many, of 20 events each), then
    the REST routes (``bench.fuzz_rest``, a twentieth as many per route and mode), against one
    real server; with ``minutes``, rounds repeat (new random seeds) until the time is up. A
    property that fails is recorded as a finding (its shrunk case and message) and the run goes
    on with the next suite."""
    started = time.monotonic()
    deadline = started + minutes * 60 if minutes else None
    report: dict[str, Any] = {"examples_per_suite": examples, "rounds": 0, "finding_details": []}
    suites: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp, FuzzServer(Path(tmp)) as server:
        with HealthProbe(server) as probe:
            while server.alive():
                report["rounds"] += 1
                for name in SUITE_NAMES:
                    probe.doing = name
                    _run_suite_once(server, name, examples, suites, report)
                probe.doing = "rest"
                rest = run_rest(server.base_url, max(10, examples // 20), stored_session(server))
                report["rest_cases"] = report.get("rest_cases", 0) + rest["cases"]
                report["finding_details"] += [{"suite": "rest", "failure": f} for f in rest["findings"]]
                if deadline is None or time.monotonic() > deadline:
                    break
            probe.stop()
        report["server_alive_at_end"] = server.alive()
        errors = server.log_errors()  # what went wrong out of the client's sight
        if errors:
            report["finding_details"].append({"suite": "server log", "failure": "\n".join(errors[:20])})
    totals = {key: sum(s[key] for s in suites.values()) for key in ("cases", "frames", "server_events", "valid_turns")}
    return {
        **totals, **report, **probe.summary(), "findings": len(report["finding_details"]),
        "suites": suites, "wall_s": round(time.monotonic() - started, 1),
    }  # fmt: skip


def _run_suite_once(
    server: FuzzServer, name: str, examples: int, suites: dict[str, dict[str, Any]],
    report: dict[str, Any],
) -> None:  # fmt: skip
    tally = Tally()
    sock = FuzzSocket(server, tally)
    started = time.monotonic()
    try:
        if name == "sequences":
            run_sequences(server, tally, max(1, examples // 10))
        elif name == "resumes":
            run_resumes(sock, max(1, examples // 10))
        else:
            run_suite(sock, name, examples)
    except Exception as exc:  # noqa: BLE001 - a finding; the other suites still run
        failure = f"{type(exc).__name__}: {exc}"[:4000]
        report["finding_details"].append({"suite": name, "round": report["rounds"], "failure": failure})
    finally:
        sock.close()
    entry = suites.setdefault(name, Tally().as_dict() | {"wall_s": 0.0})
    _merge(entry, tally.as_dict(), time.monotonic() - started)


def _merge(entry: dict[str, Any], tally: dict[str, Any], wall_s: float) -> None:
    for key in ("cases", "frames", "server_events", "valid_turns", "connections"):
        entry[key] += tally[key]
    for name in ("error_codes", "event_types"):
        for key, count in tally[name].items():
            entry[name][key] = entry[name].get(key, 0) + count
    entry["wall_s"] = round(entry["wall_s"] + wall_s, 1)
