"""The model ports' one way to run a blocking adapter call: result, timeout, errors."""

import threading
import time

import pytest

from assistant.errors import InvalidRequestError, ModelError, ModelTimeoutError
from assistant.ports.blocking import call_off_loop


async def test_the_result_comes_back_from_a_worker_thread():
    assert await call_off_loop("m", 5, "x", lambda a, b: a + b, 1, 2) == 3
    value, thread = await call_off_loop("m", 5, "x", lambda: (7, threading.current_thread()))
    assert value == 7 and thread is not threading.main_thread()


async def test_a_slow_call_is_a_model_timeout_naming_what_did_not_come():
    with pytest.raises(ModelTimeoutError, match="^stt: no transcript within 0 s$") as info:
        await call_off_loop("stt", 0.05, "transcript", time.sleep, 1)
    assert info.value.code == "model_timeout"


async def test_a_failure_is_a_model_error_and_an_assistant_error_passes_through():
    def broken() -> None:
        raise RuntimeError("boom")

    def refused() -> None:
        raise InvalidRequestError("no", code="unsupported_language")

    with pytest.raises(ModelError, match=r"tts failed \(RuntimeError\)"):
        await call_off_loop("tts", 5, "speech", broken)
    with pytest.raises(InvalidRequestError) as info:
        await call_off_loop("tts", 5, "speech", refused)
    assert info.value.code == "unsupported_language"
