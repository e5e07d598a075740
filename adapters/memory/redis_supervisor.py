"""Keeps the private redis-server running: when its process dies, it is started again.

A thread of the process that owns the child waits on it (``Popen.wait``: no polling, and the
event loop never blocks). When the process exits without ``stop()`` having been asked, it is
started again on the same port and data directory, so the store's connections find it where they
left it and reconnect on their next request, and the append-only file (``appendfsync always``)
brings back every write that was acknowledged. The first try is at once; when it fails, or the
server dies again soon after it came back, the tries back off (``first_backoff_s``, doubling, up
to ``max_backoff_s``). After ``error_after`` failed tries in a row every further failure is
logged as an error, and the tries go on at ``max_backoff_s``: it never gives up silently.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from adapters.memory.embedded_redis import EmbeddedRedis, EmbeddedRedisError

log = logging.getLogger(__name__)


class RedisSupervisor:
    """``RedisSupervisor(EmbeddedRedis(dir)).start()``: the server started and watched;
    ``stop()`` stops both. ``url``, ``pid`` and ``restarts`` say where it is and how it went."""

    def __init__(
        self,
        server: EmbeddedRedis,
        *,
        first_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        error_after: int = 5,
        stable_s: float = 30.0,
    ) -> None:
        self.server = server
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.error_after = error_after
        #: A server that ran this long before it died is restarted at once, as a first failure.
        self.stable_s = stable_s
        #: Times the server was started again.
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int | None:
        return self.server.pid

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    def start(self) -> RedisSupervisor:
        """Start the server (``EmbeddedRedisError`` if it does not come up) and its watcher."""
        self._stopping.clear()
        self.server.start()
        # A daemon: an interpreter that exits without stop() is not held up by it (the server,
        # started by this thread or the main one, gets SIGTERM when they end; Linux).
        self._thread = threading.Thread(target=self._watch, name="redis-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop watching, then stop the server (SHUTDOWN: the append-only file is flushed)."""
        self._stopping.set()
        self.server.stop(timeout_s)
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def __repr__(self) -> str:
        return f"RedisSupervisor({self.server!r}, restarts={self.restarts})"

    # -- the watcher thread ------------------------------------------------------------------------

    def backoff_s(self, failures: int) -> float:
        """The wait before the next try after ``failures`` failed ones in a row."""
        if failures == 0:
            return 0.0
        if failures >= self.error_after:
            return self.max_backoff_s
        return min(self.max_backoff_s, self.first_backoff_s * 2 ** (failures - 1))

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            up_since = time.monotonic()
            pid = self.server.pid
            code = self.server.wait()
            if self._stopping.is_set() or self.server.stopped:
                return
            died_at = time.monotonic()
            if died_at - up_since >= self.stable_s:
                failures = 0  # it ran well: a new incident, not a crash loop
            log.warning(
                "the embedded redis-server (pid %s) exited with code %s; starting it again on "
                "port %s (log %s)", pid, code, self.server.port, self.server.log_path,
            )  # fmt: skip
            try:
                failures = self._restart(failures, died_at)
            except Exception:  # a bug here must not end the watch (nor, on Linux, the server)
                log.exception("the redis supervisor failed; watching again")
                self._stopping.wait(self.max_backoff_s)

    def _restart(self, failures: int, died_at: float) -> int:
        """Try until the server is back (or ``stop()``); the failures so far, counting a
        successful start as one while the server has not stayed up for ``stable_s``."""
        while not self._stopping.wait(self.backoff_s(failures)):
            try:
                self.server.restart()
            except EmbeddedRedisError as exc:
                if self._stopping.is_set() or self.server.stopped:
                    break
                failures += 1
                level = logging.ERROR if failures >= self.error_after else logging.WARNING
                log.log(
                    level, "the embedded redis-server could not be started again (try %d, "
                    "trying again in %.1f s): %s", failures, self.backoff_s(failures), exc,
                )  # fmt: skip
                continue
            self.restarts += 1
            log.warning(
                "the embedded redis-server is back: pid %s on port %s, %.2f s after it exited",
                self.server.pid, self.server.port, time.monotonic() - died_at,
            )  # fmt: skip
            return failures + 1
        return failures
