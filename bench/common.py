"""Helpers shared by the benchmark entries: free loopback ports, the open-file limit, reading a
process's memory and CPU time from ``/proc``, percentiles, and server subprocesses that are always
stopped (SIGINT, then SIGTERM, then SIGKILL) however the benchmark ends."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

#: The reply of the "instant" scripted model (6 words: 6 deltas per turn).
REPLY = "Sure, here is a short answer."
#: The user's message of every benchmark turn.
PROMPT = "Hello there, how are you?"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile_limit(wanted: int = 65536) -> int:
    """Raise the soft open-file limit towards ``wanted`` (capped by the hard limit); children
    started afterwards inherit it. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (its threads included)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 onwards)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its living descendants (a server's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(_stat(int(entry.name))[1])  # ppid (field 4)
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_cpu_s(pid: int) -> float:
    """``cpu_s`` summed over ``pid`` and its living descendants."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_s(member)
        except OSError:
            continue
    return total


def tree_rss_kb(pid: int) -> int:
    """``rss_kb`` summed over ``pid`` and its living descendants."""
    total = 0
    for member in process_tree(pid):
        try:
            total += rss_kb(member)
        except (OSError, RuntimeError):
            continue
    return total


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s:.0f} s:\n{tail(log)}")


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class ServerProcess:
    """A Python server module run as ``python -m ...`` on a loopback port, logging to a file.
    ``stop()`` is idempotent and always ends the process (its whole process group)."""

    def __init__(self, name: str, args: list[str], port: int, log_dir: Path, env: dict[str, str]):
        self.name = name
        self.port = port
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] | None = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, *args], env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "/v1/realtime") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout_s: float = 60.0) -> ServerProcess:
        wait_for_port(self.port, self.proc, self.log_path, timeout_s)
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        proc = self.proc
        steps = ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0))
        for sig, wait_s in steps:
            if proc.poll() is not None:
                break
            try:
                if sig == signal.SIGKILL:
                    os.killpg(proc.pid, sig)  # its own process group: anything it started too
                else:
                    proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        if self._log is not None:
            self._log.close()
            self._log = None


def bench_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``ASSISTANT_*`` setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
