"""``TcpProxy``: a loopback TCP forwarder for a test, to cut a page's open connections as a network
drop would: ``down()`` closes every connection it carries and refuses new ones until ``up()``.

    with TcpProxy(server.port) as proxy:
        page.goto(f"http://127.0.0.1:{proxy.port}/agent")   # the page's origin is the proxy's
        proxy.down(); ...; proxy.up()
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.listener = socket.create_server((host, 0))
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._refusing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, path: str = "") -> str:
        return f"http://{self.target[0]}:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self._refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)  # the end of one direction, passed on
        except OSError:
            self._close(source, sink)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def down(self) -> None:
        """Cut every open connection; refuse new ones until ``up``."""
        self._refusing = True
        with self._lock:
            sockets = list(self._open)
        self._close(*sockets)

    def up(self) -> None:
        self._refusing = False

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.listener.close()
        self.down()
        self._thread.join(timeout=5)
