"""Several server processes on one port, with the connections spread evenly between them.

uvicorn's own ``--workers`` gives every worker the same listening socket; whichever worker wakes
first accepts, so a burst of connections (a thousand clients reconnecting after a deploy) can pile
onto one worker while the others idle, and a WebSocket stays where it landed. Here each worker
gets a listening socket of its own, all bound to the same port with ``SO_REUSEPORT``: the kernel
hashes every new connection to one of them, evenly. The sockets are bound here, before any worker
starts, so no connection lands while a worker is missing. A worker that dies is started again.

Any worker serves any session (the session's memory is in Redis), so which one a client reaches
does not matter. Where ``SO_REUSEPORT`` does not exist (or does not balance, as on macOS), use
uvicorn's ``workers`` instead: ``balanced_workers_supported()`` says which.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from types import FrameType

from assistant.processes import Stopped, die_with_parent, stop_on_signals

log = logging.getLogger(__name__)


def balanced_workers_supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_reuseport(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on host:port that other sockets may share (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _worker(app: str, sock: socket.socket, log_level: str, parent: int) -> None:
    """One worker process: uvicorn serving the app factory ``app`` on its own socket, until
    SIGINT or SIGTERM (exit code 0), or until its parent dies (Linux: it gets SIGTERM then)."""
    die_with_parent(parent)
    with stop_on_signals():
        try:
            import uvicorn

            from assistant.config import Settings
            from assistant.server import logs
            from assistant.server.http_protocol import uvicorn_options

            server = Settings().server
            logs.configure(log_level, server.log_format)
            config = uvicorn.Config(app, factory=True, log_level=log_level, log_config=None,
                                    **uvicorn_options(server))  # fmt: skip
            uvicorn.Server(config).run(sockets=[sock])
        except Stopped:
            pass  # uvicorn stopped gracefully and raised the signal again, or it came before


def serve_balanced(app: str, host: str, port: int, workers: int, log_level: str = "info") -> None:
    """Run ``workers`` processes serving the app factory ``app`` ("module:function", settings
    from the environment) on host:port until SIGINT or SIGTERM; then stop them gracefully."""
    sockets = [bind_reuseport(host, port) for _ in range(workers)]
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start(index: int) -> multiprocessing.process.BaseProcess:
        process = context.Process(
            target=_worker, args=(app, sockets[index], log_level, os.getpid()),
            name=f"assistant-worker-{index}",
        )  # fmt: skip
        process.start()
        return process

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    # A signal wakes the wait below at once (its handler alone would let the wait go on).
    wake, wake_in = socket.socketpair()
    wake.setblocking(False)
    wake_in.setblocking(False)
    previous_wakeup = signal.set_wakeup_fd(wake_in.fileno(), warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [start(i) for i in range(workers)]
    log.info("%d workers on %s:%d, one socket each (SO_REUSEPORT)", workers, host, port)
    try:
        while not stopping:  # until a signal or a worker's exit
            multiprocessing.connection.wait([wake, *(process.sentinel for process in processes)])
            with contextlib.suppress(BlockingIOError):
                wake.recv(4096)
            for index, process in enumerate(processes):
                if not process.is_alive() and not stopping:
                    log.warning("worker %d exited with %s; starting it again", index,
                                process.exitcode)  # fmt: skip
                    processes[index] = start(index)
                    # At most two restarts a second (a worker that cannot start fails at once);
                    # a signal cuts the pause short.
                    multiprocessing.connection.wait([wake], timeout=0.5)
    finally:
        for process in processes:  # graceful: uvicorn finishes open requests on SIGINT
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        for sock in sockets:
            sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_wakeup)
        wake.close()
        wake_in.close()
