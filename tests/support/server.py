"""A real ``python -m assistant serve`` process for a test: started on a free port, awaited on
``/healthz``, its log kept, and stopped by pid on every way out, with the processes it started.

    env = serve_env(data_dir, ASSISTANT_LLM__ADAPTER="scripted")
    with ServerProcess(env) as server:
        httpx.get(server.url("/v1/models"))

``serve_env`` starts from the test's own environment without any ``ASSISTANT_*`` variable (so a
developer's settings do not leak in), sets ``ASSISTANT_DATA_DIR`` and the caller's settings.
``link_prepared_models`` makes the real default models (SmolLM2 and the rest, prepared once
under the user's data dir, 538 MB) visible in a test's private data dir without copying them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.processes import alive, children, cmdline, end, free_port
from tests.support.waiting import wait_for


def serve_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment for ``assistant serve``: the test's own without ``ASSISTANT_*``, the data
    dir, and ``settings`` (``ASSISTANT_LLM__ADAPTER="scripted"``, ...)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    return {**base, "ASSISTANT_DATA_DIR": str(data_dir), **settings}


def link_prepared_models(data_dir: Path) -> Path:
    """Prepare the default models (at once when they are) under the user's data dir and link them
    as ``data_dir/models``; returns the prepared directory."""
    from assistant.config import Settings
    from assistant.registry import prepare_models

    settings = Settings()
    prepare_models(settings, progress=False)
    data_dir.mkdir(parents=True, exist_ok=True)
    link = data_dir / "models"
    if not link.exists():
        link.symlink_to(settings.models_dir, target_is_directory=True)
    return settings.models_dir


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


class ServerProcess:
    """``assistant serve`` as a context manager. ``env`` must name the data dir
    (``ASSISTANT_DATA_DIR``, see ``serve_env``); the log goes to a file there. ``args`` are more
    ``serve`` arguments (``--workers 2``, ``--log-level info``). Entering returns once
    ``/healthz`` answers 200 (or fails with the log's tail); leaving ends the server and every
    process it started (its private redis-server, its workers) by pid."""

    def __init__(
        self,
        env: dict[str, str],
        *args: str,
        port: int | None = None,
        startup_timeout_s: float = 180.0,
        log_level: str = "warning",
    ) -> None:
        if "ASSISTANT_DATA_DIR" not in env:
            raise ValueError("env must set ASSISTANT_DATA_DIR (see serve_env)")
        self.env = env
        self.args = args
        self.port = port or free_port()
        self.data_dir = Path(env["ASSISTANT_DATA_DIR"])
        self.startup_timeout_s = startup_timeout_s
        self.log_level = log_level
        self.log_path = self.data_dir / f"serve-{self.port}-{time.time_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started: dict[int, str] = {}  # descendants seen once it was up: pid -> cmdline

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server was not started"
        return self.proc.pid

    def url(self, path: str = "") -> str:
        """``http://127.0.0.1:<port><path>``; ``url("/v1")`` is an OpenAI client's base URL."""
        return self.base_url + path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, (
            "the server exited:\n" + self.log_tail()
        )
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self.url("/healthz"), timeout=5).status_code == 200
        return False  # not listening yet

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "assistant", "serve", "--port", str(self.port),
                   "--log-level", self.log_level, *self.args]  # fmt: skip
        with open(self.log_path, "wb") as log:  # the child holds its own copy of the descriptor
            self.proc = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for(self.healthy, timeout_s=self.startup_timeout_s, poll_s=0.1,
                     what=lambda: "the server to answer /healthz:\n" + self.log_tail())  # fmt: skip
            self._started = {pid: cmdline(pid) for pid in _descendants(self.proc.pid)}
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """End the server by pid (SIGTERM: its graceful stop; SIGKILL if that hangs), then any
        process it started that is still there. Safe to call twice."""
        if self.proc is None:
            return
        now = {pid: cmdline(pid) for pid in _descendants(self.proc.pid)}
        try:
            end(self.proc.pid, timeout_s=30)
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)  # reap it
            for pid, line in {**self._started, **now}.items():
                if alive(pid) and cmdline(pid) == line:  # the same process, not a reused pid
                    end(pid)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
