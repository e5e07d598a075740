"""adapters.torch_thread: one thread runs every job, whoever submits it; a job submitted from that
thread runs inline (no deadlock); exceptions reach the caller; generators are advanced there."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from adapters import torch_thread
from adapters.torch_thread import (
    is_torch_thread,
    iterate_on_torch_thread,
    on_torch_thread,
    run_on_torch_thread,
    run_sync,
)


def test_importing_the_module_neither_imports_torch_nor_starts_a_thread():
    code = (
        "import sys, threading; import adapters.torch_thread as t; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert t._executor is None; assert threading.active_count() == 1; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "ok"


def test_jobs_from_any_thread_run_on_one_thread_that_is_none_of_theirs():
    seen: set[int] = set()
    callers: set[int] = set()

    def job() -> int:
        callers.add(threading.get_ident())
        return run_sync(threading.get_ident)

    with ThreadPoolExecutor(max_workers=4) as pool:
        seen.update(f.result() for f in [pool.submit(job) for _ in range(32)])
    seen.add(run_sync(threading.get_ident))  # and from the main thread
    assert len(seen) == 1
    assert seen.isdisjoint(callers | {threading.get_ident()})
    assert run_sync(is_torch_thread) and not is_torch_thread()
    assert run_sync(lambda: threading.current_thread().name).startswith(torch_thread.THREAD_NAME)


def test_a_call_from_the_torch_thread_itself_runs_inline():
    def outer() -> tuple[int, int, int]:
        inner = run_sync(threading.get_ident)  # would wait for itself if it were submitted
        items = list(iterate_on_torch_thread(x for x in (1, 2)))
        return threading.get_ident(), inner, sum(items)

    result: list[tuple[int, int, int]] = []
    caller = threading.Thread(target=lambda: result.append(run_sync(outer)), daemon=True)
    caller.start()
    caller.join(timeout=10)
    assert not caller.is_alive(), "deadlock: a nested call waited for the torch thread"
    outer_ident, inner_ident, total = result[0]
    assert outer_ident == inner_ident and total == 3


async def test_the_async_way_runs_there_too_and_keeps_the_loop_free():
    loop_thread = threading.get_ident()
    ident = await run_on_torch_thread(threading.get_ident)
    assert ident != loop_thread and ident == run_sync(threading.get_ident)
    assert await run_on_torch_thread(lambda a, b=0: a + b, 2, b=3) == 5
    started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "done"

    task = asyncio.ensure_future(run_on_torch_thread(slow))
    await asyncio.to_thread(started.wait, 5)
    assert not task.done()  # the loop runs while the job waits
    release.set()
    assert await task == "done"


def test_a_decorated_function_or_method_always_runs_there():
    class Model:
        @classmethod
        @on_torch_thread
        def load(cls, name: str) -> tuple[type, str, int]:
            """Docs."""
            return cls, name, threading.get_ident()

        @on_torch_thread
        def forward(self, x: int) -> tuple[int, int]:
            return x + 1, threading.get_ident()

    torch_ident = run_sync(threading.get_ident)
    assert Model.load("m") == (Model, "m", torch_ident)
    assert Model.load.__doc__ == "Docs." and Model.load.__name__ == "load"
    assert Model().forward(1) == (2, torch_ident)
    assert run_sync(Model().forward, 2) == (3, torch_ident)  # inline there


def test_exceptions_propagate_to_the_caller():
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_sync(fail)
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(run_on_torch_thread(fail))

    def steps():
        yield 1
        raise KeyError("in the loop")

    items = iterate_on_torch_thread(steps())
    assert next(items) == 1
    with pytest.raises(KeyError, match="in the loop"):
        next(items)
    assert run_sync(lambda: 7) == 7  # the thread survives a failed job


def test_a_generator_is_advanced_on_the_torch_thread_in_its_context_and_closed_there():
    where: list[tuple[str, int, bool]] = []
    entered = threading.local()

    @contextlib.contextmanager
    def mark():
        entered.inside = True
        try:
            yield
        finally:
            entered.inside = False

    def steps():
        try:
            for i in range(5):
                where.append(("step", threading.get_ident(), getattr(entered, "inside", False)))
                yield i
        finally:
            where.append(("close", threading.get_ident(), getattr(entered, "inside", False)))

    items = iterate_on_torch_thread(steps(), context=mark)
    assert [next(items), next(items)] == [0, 1]
    items.close()  # stops the loop early: the generator's finally runs on the torch thread
    torch_ident = run_sync(threading.get_ident)
    assert [w[0] for w in where] == ["step", "step", "close"]
    assert all(ident == torch_ident and inside for _, ident, inside in where)
    assert list(iterate_on_torch_thread(iter_range(3))) == [0, 1, 2]


def iter_range(n: int):
    yield from range(n)


# -- the adapters' torch work runs there -----------------------------------------------------------


def record_forward_threads(module) -> tuple[set[int], object]:
    threads: set[int] = set()
    handle = module.register_forward_pre_hook(lambda *_: threads.add(threading.get_ident()))
    return threads, handle


async def test_the_vision_encoder_and_the_projector_run_their_forwards_there():
    pytest.importorskip("torch")
    np = pytest.importorskip("numpy")
    from adapters.vision.efficientnet import EfficientNetLite0, EfficientNetLite0Encoder
    from adapters.vision.projector import ProjectorAdapter, build_projector

    encoder = EfficientNetLite0Encoder(EfficientNetLite0(), [f"class {i}" for i in range(1000)])
    projector = build_projector("mlp2x_gelu", in_dim=1280, hidden_size=8)
    encoded, encoder_hook = record_forward_threads(encoder.model)
    projected, projector_hook = record_forward_threads(projector)
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    features = await encoder.encode(image)  # the port: a worker thread, then the torch thread
    assert features.patches.shape == (49, 1280) and features.class_probs.shape == (1000,)
    assert ProjectorAdapter(projector).project(features).shape == (49, 8)
    projector.project(features)  # called directly, as the image bench does
    encoder._encode_impl(image)
    encoder_hook.remove()
    projector_hook.remove()
    assert encoded == projected == {run_sync(threading.get_ident)}


def test_the_encoder_loads_its_weights_there(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from adapters.vision import efficientnet

    weights = tmp_path / "lite0.pth"
    torch.save(efficientnet.EfficientNetLite0().state_dict(), weights)
    loaded_on: list[int] = []
    load = torch.load

    def recording_load(*args, **kwargs):
        loaded_on.append(threading.get_ident())
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    encoder = efficientnet.EfficientNetLite0Encoder.from_path(str(weights))
    assert loaded_on == [run_sync(threading.get_ident)]
    assert encoder.capabilities.patches == 49


async def test_the_native_vlm_runs_its_forwards_there(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    np = pytest.importorskip("numpy")
    from adapters.llm.transformers_vlm import TransformersVLM
    from assistant.ports import IMAGE_MARKER, Prompt, PromptImage, PromptMessage
    from tests.support.tiny_llava import save_tiny_llava

    lm = TransformersVLM.from_path(str(save_tiny_llava(tmp_path / "tiny-llava")))
    threads, handle = record_forward_threads(lm.model)
    pixels = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    image = PromptImage("cat", pixels=pixels)
    prompt = Prompt((PromptMessage("user", f"{IMAGE_MARKER}\nWhat is this?", (image,)),))
    deltas = [delta async for delta in lm.stream(prompt)]  # gibberish, or nothing: random weights
    handle.remove()
    assert all(isinstance(delta, str) for delta in deltas)
    assert threads == {run_sync(threading.get_ident)}
