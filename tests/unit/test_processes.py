"""SIGTERM and SIGINT raise ``Stopped`` once (a second one does not cut the clean-up short), the
handlers come back after; a child made to die with its parent ends when the parent is killed."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from assistant.processes import Stopped, die_with_parent_hook, stop_on_signals
from tests.support import processes
from tests.support.waiting import wait_for


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_raises_stopped_and_a_second_is_ignored(signum):
    before = signal.getsignal(signum)
    cleaned_up = False
    with stop_on_signals():
        with pytest.raises(Stopped) as caught:
            try:
                signal.raise_signal(signum)  # the handler runs before this returns
            finally:
                signal.raise_signal(signal.SIGTERM)  # during the clean-up: ignored
                cleaned_up = True
    assert caught.value.signum == signum and cleaned_up
    assert signal.getsignal(signum) is before


def test_after_hold_signals_are_ignored():
    with stop_on_signals() as signals:
        signals.hold()  # a clean-up under way
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
    assert signals.fired is None


@pytest.mark.skipif(die_with_parent_hook() is None, reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_dies_with_its_parent():
    parent_code = (
        "import subprocess, sys, time\n"
        "from assistant.processes import die_with_parent_hook\n"
        "child = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent_hook())\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        assert processes.alive(child)
        parent.kill()  # SIGKILL: no clean-up runs in the parent
        parent.wait()
        wait_for(lambda: not processes.alive(child), what=f"the child {child} to end")
    finally:
        parent.kill()
        parent.wait()
        processes.end(child)
