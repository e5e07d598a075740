"""A private ``redis-server`` on loopback, with its data (append-only file on) under one directory.

``assistant serve`` starts one when no Redis URL is configured, so the default store is real Redis
and a restart keeps the history; ``redis_supervisor.RedisSupervisor`` starts it again when it dies.
Nothing happens at import time.

Durability: ``appendfsync always`` by default. Redis writes and fsyncs the append-only file
before it sends the replies of an event-loop iteration, so a write the store saw acknowledged is
on disk, whether Redis alone is killed or the machine loses power. With ``everysec`` Redis may
postpone even the write(2) for up to two seconds while a background fsync runs, replying
meanwhile: a ``kill -9`` then loses writes that were acknowledged. The fsync is one per
iteration for all clients (the store pipelines its requests), not one per command.

On Linux the child gets SIGTERM when the process that started it dies (``PR_SET_PDEATHSIG``), so
even a SIGKILLed ``assistant serve`` leaves no redis-server behind; elsewhere the next start on
the same directory stops the orphan (its owner, in ``owner.pid``, is gone).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from assistant.processes import die_with_parent_hook

_SEARCH_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")
_INSTALL_HINT = (
    "install it (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`) "
    "or point the assistant at a running Redis with ASSISTANT_REDIS_URL=redis://host:6379/0"
)
PIDFILE = "redis.pid"
OWNERFILE = "owner.pid"  # the process that started the server (it stops it on exit)
LOGFILE = "redis.log"
APPENDFSYNC = ("always", "everysec")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


class EmbeddedRedisError(RuntimeError):
    """The private redis-server could not be started."""


def find_redis_server(search_dirs: tuple[str, ...] | None = None) -> str:
    """The ``redis-server`` binary's path, or ``EmbeddedRedisError`` saying how to install it."""
    found = shutil.which("redis-server")
    if found:
        return found
    search_dirs = _SEARCH_DIRS if search_dirs is None else search_dirs
    for directory in search_dirs:
        candidate = Path(directory) / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    where = ", ".join(search_dirs)
    raise EmbeddedRedisError(f"redis-server not found on PATH nor in {where}; {_INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def live_redis_pid(pidfile: Path) -> int | None:
    """The pid recorded in ``pidfile`` if that process is alive and is a redis-server, else None."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: a reused pid of another program is not ours
        try:
            if b"redis-server" not in cmdline.read_bytes():
                return None
        except OSError:
            return None
    return pid


def _command(sock_port: int, command: bytes, timeout_s: float = 1.0) -> bytes:
    """Send one inline command to 127.0.0.1:port and return the first reply bytes."""
    with socket.create_connection(("127.0.0.1", sock_port), timeout=timeout_s) as sock:
        sock.sendall(command + b"\r\n")
        return sock.recv(256)


class EmbeddedRedis:
    """``with EmbeddedRedis(dir) as server: ... server.url``; or ``start()`` / ``stop()``.
    ``wait()`` blocks until the process exits and ``restart()`` starts it again on the same port
    (``redis_supervisor`` does both from its thread; ``stop()`` may come from another)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        binary: str | None = None,
        startup_timeout_s: float = 15.0,
        appendfsync: str = "always",
    ) -> None:
        if appendfsync not in APPENDFSYNC:
            raise EmbeddedRedisError(f"appendfsync must be one of {APPENDFSYNC}, not {appendfsync!r}")
        self.data_dir = Path(data_dir)
        self._requested_port = port
        self._binary = binary
        self.startup_timeout_s = startup_timeout_s
        self.appendfsync = appendfsync
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()  # spawning and stopping, which may come from two threads
        self._stopped = False

    # -- public ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedRedisError("the embedded redis-server is not started")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def stopped(self) -> bool:
        """``stop()`` was called (and ``start()`` not since): ``restart()`` refuses."""
        return self._stopped

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOGFILE

    def start(self) -> "EmbeddedRedis":
        """Start the server and wait until it answers PING; a no-op when it already runs."""
        if self.running:
            return self
        binary = self._binary or find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pidfile = self.data_dir / PIDFILE
        other = live_redis_pid(pidfile)
        if other is not None:
            self._stop_orphan(other)
        pidfile.unlink(missing_ok=True)  # stale: its process is gone
        self._stopped = False
        attempts = 1 if self._requested_port else 3  # a picked free port can be taken meanwhile
        for attempt in range(attempts):
            self.port = self._requested_port or free_port()
            try:
                self._launch(binary)
                return self
            except EmbeddedRedisError:
                in_use = "Address already in use" in self._log_tail()
                if not in_use or attempt == attempts - 1:
                    raise
        return self  # pragma: no cover

    def restart(self) -> "EmbeddedRedis":
        """Start the server again, on the same port and data directory, after its process
        exited; a no-op while it runs. ``EmbeddedRedisError`` when it does not answer, or when
        ``stop()`` was called (it is not started again after that)."""
        if self.port is None:
            raise EmbeddedRedisError("the embedded redis-server was never started")
        if not self.running:
            self._launch(self._binary or find_redis_server())
        return self

    def wait(self) -> int | None:
        """Block until the server's process exits; its exit code (negative: the signal that
        killed it), None when none was started."""
        proc = self._proc
        return None if proc is None else proc.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SHUTDOWN (the append-only file is flushed), then terminate or kill if it lingers.
        ``restart()`` does nothing after this."""
        with self._lock:
            self._stopped = True
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None and self.port is not None:
                try:
                    _command(self.port, b"SHUTDOWN")
                except OSError:
                    pass  # the connection drops when the server exits, or it is already gone
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    pass
            self._kill()

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis(dir={str(self.data_dir)!r}, port={self.port}, pid={self.pid})"

    # -- internals ---------------------------------------------------------------------------------

    def _stop_orphan(self, pid: int) -> None:
        """A redis-server already runs on this directory. If the process that started it is gone
        (killed without a chance to stop it), end it gracefully (SIGTERM flushes the append-only
        file); if its owner still runs, refuse: two servers must not share one data directory."""
        owner = _read_pid(self.data_dir / OWNERFILE)
        if owner is not None and _alive(owner):
            raise EmbeddedRedisError(
                f"a redis-server (pid {pid}) started by process {owner} already runs on "
                f"{self.data_dir}; stop that process or use another data directory"
            )
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            raise EmbeddedRedisError(f"an orphaned redis-server (pid {pid}) did not stop on SIGTERM")

    def _launch(self, binary: str) -> None:
        """Spawn the server on ``self.port`` and wait until it answers; on failure it is ended."""
        with self._lock:
            if self._stopped:
                raise EmbeddedRedisError("the embedded redis-server was stopped")
            self._kill()  # the previous process, if any, has exited: reaped, its log closed
            proc = self._spawn(binary, self.data_dir / PIDFILE)
        try:
            self._wait_ready(proc)  # without the lock: stop() may end it meanwhile
        except EmbeddedRedisError:
            with self._lock:
                if self._proc is proc:
                    self._kill()
            raise
        (self.data_dir / OWNERFILE).write_text(str(os.getpid()))

    def _spawn(self, binary: str, pidfile: Path) -> subprocess.Popen[bytes]:
        args = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--pidfile", str(pidfile),
        ]  # fmt: skip
        self._log = open(self.log_path, "ab")
        # Its own session: a Ctrl-C meant for the server process does not reach Redis first.
        # On Linux it gets SIGTERM when the thread that started it ends (see the module's doc).
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.data_dir, start_new_session=True, preexec_fn=die_with_parent_hook(),
        )  # fmt: skip
        return self._proc

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        assert self.port is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with code {proc.returncode}; log {self.log_path}:\n"
                    + self._log_tail()
                )
            try:
                if _command(self.port, b"PING").startswith(b"+PONG"):
                    return  # -LOADING while the append-only file is replayed: keep waiting
            except OSError:
                pass
            time.sleep(0.02)
        raise EmbeddedRedisError(
            f"redis-server did not answer PING within {self.startup_timeout_s:.0f} s; "
            f"log {self.log_path}:\n" + self._log_tail()
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _kill(self) -> None:
        """End the process (if it still runs) and close its log; called with ``_lock`` held."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: Redis shuts down cleanly too
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
