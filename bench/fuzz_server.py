"""The server side of the fuzzer (``bench.fuzz``): a real ``assistant serve`` process with the
scripted model and its own private redis-server, stopped in every exit path, and a thread asking
its ``/healthz`` over new connections all along, whose worst latency is how long the event loop
could not answer (a stall detector, not a speed test)."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import REPLY, ServerProcess, bench_env, free_port, tail

#: /healthz slower than this during the run is a stalled event loop (a stall detector, not speed).
HEALTH_BOUND_S = 2.0
#: A probe slower than this is listed with what the run was doing.
SLOW_S = 0.5


class FuzzFailure(AssertionError):
    """A property of the server did not hold."""


def fuzz_env(**extra: str) -> dict[str, str]:
    """The server's environment: the scripted model (no weights) with a fixed reply, nothing else
    from ours."""
    return bench_env(ASSISTANT_LLM__ADAPTER="scripted", ASSISTANT_LLM__MODEL=REPLY, **extra)


class FuzzServer:
    """``python -m assistant serve --port P --data-dir D``, stopped (SIGINT, SIGTERM, SIGKILL of its
    process group) in every exit path: use it as a context manager."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        args = ["-m", "assistant", "serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        self.process = ServerProcess("fuzz-server", args, self.port, data_dir, fuzz_env(**env))

    def __enter__(self) -> FuzzServer:
        try:
            self.process.wait_ready(timeout_s=120)
            _wait_healthy(self)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.process.stop()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        return tail(self.process.log_path, chars)

    def log_errors(self) -> list[str]:
        """Lines of the server's log that tell of an error: a traceback, an ERROR record (by
        their markers: a fuzzed path may itself read "Traceback" in an access line)."""
        text = tail(self.process.log_path, 10**8)
        return [line for line in text.splitlines()
                if "Traceback (most recent call last)" in line or " ERROR " in line]  # fmt: skip

    def get(self, path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def _wait_healthy(server: FuzzServer, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"the server exited:\n{server.log_tail()}")
        try:
            if server.get("/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)  # the poll interval of a start-up wait
    raise RuntimeError(f"/healthz not ok after {timeout_s:.0f} s:\n{server.log_tail()}")


class HealthProbe:
    """A thread that asks ``/healthz`` over a new connection every ``interval_s`` and keeps the
    latencies: the worst one is the longest the event loop was unable to answer."""

    def __init__(self, server: FuzzServer, interval_s: float = 0.05) -> None:
        self.server = server
        self.interval_s = interval_s
        self.latencies: list[float] = []
        self.failures: list[str] = []
        #: What the run is doing now (the driver says: a suite's name), and what it was doing
        #: when each probe slower than ``SLOW_S`` was answered.
        self.doing = ""
        self.slow: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-probe", daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=HEALTH_BOUND_S * 5)

    @property
    def worst_s(self) -> float:
        return max(self.latencies, default=0.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                status, _ = self.server.get("/healthz", timeout_s=HEALTH_BOUND_S * 5)
                if status != 200:
                    self.failures.append(f"/healthz answered {status}")
            except OSError as exc:
                self.failures.append(f"/healthz: {exc}")
            latency = time.perf_counter() - started
            self.latencies.append(latency)
            if latency > SLOW_S:
                self.slow.append((round(latency, 3), self.doing))
            self._stop.wait(self.interval_s)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        p99 = ordered[int(len(ordered) * 0.99)] if ordered else 0.0
        return {
            "healthz_probes": len(ordered),
            "healthz_worst_ms": round(self.worst_s * 1000, 1),
            "healthz_p99_ms": round(p99 * 1000, 1),
            "healthz_failures": len(self.failures),
            "healthz_slow": sorted(self.slow, reverse=True)[:5],  # (s, during), over SLOW_S
        }

    def check(self) -> None:
        if self.failures:
            raise FuzzFailure(f"/healthz failed during the run: {self.failures[:3]}")
        if self.worst_s > HEALTH_BOUND_S:
            raise FuzzFailure(f"/healthz took {self.worst_s:.2f} s: the event loop stalled")
