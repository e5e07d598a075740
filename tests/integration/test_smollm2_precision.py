"""The real SmolLM2-135M-Instruct loaded in bf16 and in int8-decode (``LLMSettings.precision``,
``adapters.llm.precision``): each loads as said and answers; its greedy tokens agree with the fp32
model's within the documented tolerance (a share of tokens, teacher-forced, over a few prompts;
int8-decode's a pass per token, as it decodes; its lean decode step picks what the model's own
passes pick); a bad precision is a configuration error before
anything is loaded."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from adapters.llm import smollm2  # noqa: E402
from adapters.llm.precision import (  # noqa: E402
    BF16_MIN_AGREEMENT,
    INT8_DECODE_MIN_AGREEMENT,
    precision_of,
)
from assistant.config import Settings  # noqa: E402
from assistant.errors import ConfigurationError  # noqa: E402
from assistant.ports import GenerationOptions, Prompt, PromptMessage  # noqa: E402
from bench.decode import AGREEMENT_PROMPTS, agreement_vs_fp32  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def path():
    try:
        smollm2.gguf_path()
    except Exception as exc:  # noqa: BLE001 - the wheel is an optional install
        pytest.skip(str(exc))
    return str(smollm2.prepare(Settings().models_dir, progress=False))


@pytest.fixture(scope="module")
def fp32(path):
    from adapters.llm.transformers_local import TransformersLocalLM

    return TransformersLocalLM.from_path(path)


@pytest.fixture(scope="module")
def bf16(path):
    from adapters.llm.transformers_local import TransformersLocalLM

    return TransformersLocalLM.from_path(path, precision="bf16")


async def test_bf16_loads_in_bf16_and_answers(bf16, fp32):
    assert (precision_of(bf16.model), precision_of(fp32.model)) == ("bf16", "fp32")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    prompt = Prompt(
        (
            PromptMessage("system", "You are a helpful assistant. Answer briefly and clearly."),
            PromptMessage("user", "What is the capital of France?"),
        )
    )
    generation = bf16.stream(prompt, GenerationOptions(max_new_tokens=24, temperature=0.0))
    text = "".join([delta async for delta in generation])
    assert "Paris" in text
    assert generation.usage.output_tokens >= 2


def test_bf16_greedy_tokens_agree_with_fp32_within_the_tolerance(bf16, fp32):
    eos = sorted(fp32.eos_ids)
    prompts = AGREEMENT_PROMPTS[:4]
    share = agreement_vs_fp32(fp32.model, bf16.model, fp32.tokenizer, prompts, 24, eos)
    assert share["tokens"] >= 40  # the replies were long enough to compare
    assert share["agreement"] >= BF16_MIN_AGREEMENT
    # The fp32 model agrees with itself on every token: the measure can tell them apart.
    same = agreement_vs_fp32(fp32.model, fp32.model, fp32.tokenizer, prompts[:1], 24, eos)
    assert (same["agreement"], same["identical_prefix_share"]) == (1.0, 1.0)


def test_a_bad_precision_is_a_configuration_error(path):
    from pydantic import ValidationError

    from adapters.llm import transformers_local
    from adapters.llm.transformers_local import TransformersLocalLM
    from assistant.config import LLMSettings

    with pytest.raises(ConfigurationError, match="unknown precision 'fp16'.*fp32, bf16") as caught:
        TransformersLocalLM.from_path(path, precision="fp16")
    assert caught.value.code == "configuration_error"
    with pytest.raises(ValidationError, match="precision"):
        LLMSettings(precision="int4")
    assert LLMSettings().precision == "fp32"  # the baseline stays the default
    settings = Settings(llm=LLMSettings(model=path, precision="bf16"))
    assert precision_of(transformers_local.build(settings).model) == "bf16"


@pytest.fixture(scope="module")
def int8_decode(path):
    from adapters.llm.transformers_local import TransformersLocalLM

    return TransformersLocalLM.from_path(path, precision="int8-decode")


async def test_int8_decode_answers_and_agrees_with_fp32_within_the_tolerance(int8_decode, fp32):
    assert precision_of(int8_decode.model) == "int8-decode"
    assert next(int8_decode.model.parameters()).dtype == torch.float32  # prompts stay fp32
    prompt = Prompt((PromptMessage("user", "What is the capital of France?"),))
    generation = int8_decode.stream(prompt, GenerationOptions(max_new_tokens=24, temperature=0.0))
    assert "Paris" in "".join([delta async for delta in generation])
    eos = sorted(fp32.eos_ids)
    prompts = AGREEMENT_PROMPTS[:4]
    share = agreement_vs_fp32(
        fp32.model, int8_decode.model, fp32.tokenizer, prompts, 24, eos, one_row=True
    )
    assert share["tokens"] >= 40
    assert share["agreement"] >= INT8_DECODE_MIN_AGREEMENT
    # Teacher-forced in one pass (rows: fp32's products) it is fp32 itself: one_row is what tells.
    whole = agreement_vs_fp32(fp32.model, int8_decode.model, fp32.tokenizer, prompts[:1], 24, eos)
    assert whole["agreement"] == 1.0


def test_int8_decode_decodes_alone_through_the_lean_step_as_its_own_passes_do(int8_decode):
    from assistant.ports import CancelToken, Usage
    from bench.decode import greedy_ids, prompt_ids

    assert int8_decode.lean is not None  # SmolLM2 is a Llama: its decode steps are written out
    ids = prompt_ids(int8_decode.tokenizer, AGREEMENT_PROMPTS[1])
    options = GenerationOptions(max_new_tokens=24, temperature=0.0)
    with torch.inference_mode():
        got = list(int8_decode._generate_ids(ids, options, CancelToken(), Usage()))
    expected, _ = greedy_ids(int8_decode.model, ids, 24, sorted(int8_decode.eos_ids))
    assert len(got) >= 8 and got == expected
