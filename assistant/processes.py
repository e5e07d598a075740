"""Process lifetime: SIGTERM stops the server as Ctrl-C does, and children die with their parent.

``assistant serve`` owns child processes (the private redis-server, the workers). A terminal stops
it with SIGINT; systemd, Docker and Kubernetes with SIGTERM: both must run the same clean-up
(``stop_on_signals``). A parent killed with SIGKILL runs no clean-up at all, so on Linux a child
asks the kernel for a signal when its parent dies (``die_with_parent``, ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """Raised in the main thread by SIGINT or SIGTERM under ``stop_on_signals``. A BaseException,
    as KeyboardInterrupt is, so that an ``except Exception`` on the way does not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """What ``stop_on_signals`` yields: ``hold()`` before a clean-up that must not be cut short."""

    def __init__(self) -> None:
        self.fired: int | None = None
        self.held = False

    def hold(self) -> None:
        """From now on the signals are ignored (the process is stopping anyway)."""
        self.held = True

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.fired is None and not self.held:
            self.fired = signum
            raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopSignals]:
    """Within the block, the first of ``signals`` raises ``Stopped``; later ones, and any after
    ``hold()``, are ignored, so the clean-up that follows is not cut short. A server that handles
    the signals itself meanwhile (uvicorn does, for a graceful shutdown) raises them again through
    this handler once it has stopped. Main thread only; the previous handlers come back after."""
    state = StopSignals()
    previous = {sig: signal.signal(sig, state._handle) for sig in signals}
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return None


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """In a child process: have the kernel send ``sig`` to it when its parent dies (Linux; a
    no-op elsewhere). A parent already gone before the call (so no signal will come) gets the
    same ``sig`` at once. Linux sends it when the *thread* that started the child ends: start
    children from a thread that lives as long as they should."""
    prctl = _prctl()
    if prctl is None:
        return
    prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def die_with_parent_hook(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that makes the child ``die_with_parent`` (the
    calling process); None where that does not exist. libc is loaded here, before the fork, so
    the child only makes the call."""
    if _prctl() is None:
        return None
    parent = os.getpid()
    return functools.partial(die_with_parent, parent, sig)
