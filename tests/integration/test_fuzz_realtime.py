"""Fuzzing ``/v1/realtime`` of a real ``assistant serve`` (scripted model, its own redis-server):
hypothesis generates the client's frames (``bench/fuzz_events.py``, ``bench/fuzz_media.py``) and
``bench/fuzz.py`` checks every reply: the process alive and the socket open, every event one of
the protocol's with a documented error code and a message that leaks nothing, a valid turn still
working on the same socket, and ``/healthz`` answering in time from another connection all
along. One server for the module, one connection per suite. ``assistant bench --fuzz`` runs the
same generators for longer."""

from __future__ import annotations

import json

import pytest

from bench.fuzz import HEALTH_BOUND_S, FuzzServer, FuzzSocket, HealthProbe, Tally
from bench.fuzz_run import run_resumes, run_sequences, run_suite

pytestmark = pytest.mark.integration

#: Cases per suite: about 3,000 in all with the sequences, in about a minute here.
SUITES = {"frames": 1000, "events": 1000, "images": 400, "audio": 500}
SEQUENCES, STEPS = 80, 20
RESUMES = 150
#: uvicorn's WebSocket limit: a bigger frame is refused by the transport, not the protocol.
TRANSPORT_MAX_BYTES = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with FuzzServer(tmp_path_factory.mktemp("fuzz-ws")) as server:
        yield server


@pytest.fixture(scope="module")
def probe(server):
    with HealthProbe(server) as probe:
        yield probe


@pytest.fixture(scope="module")
def tally():
    return Tally()


@pytest.fixture
def sock(server, probe, tally):
    sock = FuzzSocket(server, tally)
    yield sock
    sock.close()


@pytest.mark.parametrize(("suite", "examples"), SUITES.items(), ids=list(SUITES))
def test_generated_frames_on_one_socket(sock, probe, suite, examples):
    probe.doing = suite
    run_suite(sock, suite, examples)  # a socket that closes is a failure of its case


def test_random_sequences_of_valid_events(server, probe, tally):
    probe.doing = "sequences"
    run_sequences(server, tally, SEQUENCES, steps=STEPS)


def test_resuming_any_session_id(sock, probe):
    probe.doing = "resumes"
    run_resumes(sock, RESUMES)


@pytest.mark.parametrize("length", [8_200, 60_000, 200_000])
def test_a_handshake_with_a_long_request_line_is_answered(server, length):
    """Found by the fuzzer: ``GET /v1/realtime?session_id=<8,200 characters>`` with the upgrade
    headers got nothing back (websockets refused the line, uvicorn logged a 414 it never sent)
    and the connection stayed open. Now the handshake is answered: accepted (the session is not
    found) or, past the HTTP parser's limit, refused with a 4xx."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as raw:
        raw.sendall(
            b"GET /v1/realtime?session_id=" + b"s" * length + b" HTTP/1.1\r\nHost: x\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        try:
            answer = raw.recv(64)
        except TimeoutError:
            answer = b""
    assert answer.startswith((b"HTTP/1.1 101", b"HTTP/1.1 4")), answer


def test_a_frame_over_the_transport_limit_closes_with_1009_and_nothing_else(server, probe, sock):
    """The one close the protocol does not make itself (README): frames up to the server's
    ``max_event_bytes`` (8 MiB) are parsed, up to 16 MiB refused with ``event_too_large``, past
    that uvicorn closes the socket with 1009 (message too big)."""
    from websockets.exceptions import ConnectionClosed

    probe.doing = "frames of 16 MiB"
    sock.connect()
    sock.exchange(["x" * (TRANSPORT_MAX_BYTES - 1024)])
    assert sock.tally.codes["event_too_large"] >= 1
    sock.send(json.dumps({"type": "input_text", "text": "x" * TRANSPORT_MAX_BYTES}))
    with pytest.raises(ConnectionClosed) as closed:
        sock._ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1009
    sock.close()
    sock.check_turn()  # the server goes on, on a new socket
    assert server.alive()


def test_the_event_loop_never_stalled(server, probe, tally, capsys):
    """Last in the module: /healthz during everything above, from other connections."""
    probe.stop()
    summary = probe.summary() | {"cases": tally.cases, "valid_turns": tally.turns}
    with capsys.disabled():
        print(f"\nfuzz /v1/realtime: {json.dumps(summary)}")
    assert server.alive(), server.log_tail()
    assert not server.log_errors(), server.log_tail()  # nothing went wrong out of sight either
    probe.check()  # no failed probe, none slower than HEALTH_BOUND_S
    assert probe.worst_s < HEALTH_BOUND_S
    assert tally.cases >= sum(SUITES.values())
