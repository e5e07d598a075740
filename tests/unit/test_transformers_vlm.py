"""The native VLM adapter on a tiny random LLaVA (``tiny_llava``) saved to a directory and loaded
back with ``TransformersVLM.from_path``: no hub. Random weights make the text gibberish; what is
checked is the prompt (image tokens, pixel values), the token loop (KV cache, EOS, limits,
cancellation), usage and the streaming of text deltas."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from adapters.llm.transformers_vlm import TransformersVLM, build  # noqa: E402
from assistant.config import LLMSettings, Settings  # noqa: E402
from assistant.errors import ConfigurationError  # noqa: E402
from assistant.ports import (  # noqa: E402
    IMAGE_MARKER,
    CancelToken,
    GenerationOptions,
    Prompt,
    PromptImage,
    PromptMessage,
    Usage,
)
from assistant.registry import build_language_model  # noqa: E402
from tests.support.tiny_llava import (  # noqa: E402
    IMAGE_TOKEN,
    IMAGE_TOKENS,
    make_processor,
    save_tiny_llava,
)
from tests.support.tiny_models import (  # noqa: E402
    ForwardCounter,
    allow_only,
    assert_cancel_stops_after_one_token,
    printable_ids,
)


def noise(seed: int, shape=(40, 56, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)  # (H, W, 3)


CAT, DOG = PromptImage("cat", pixels=noise(1)), PromptImage("dog", pixels=noise(2, (64, 48, 3)))
SYSTEM = PromptMessage("system", "You are a helpful assistant.")
ONE_IMAGE = Prompt(
    (SYSTEM, PromptMessage("user", f"{IMAGE_MARKER}\nWhat is in this image?", (CAT,)))
)
TWO_IMAGES = Prompt(
    (
        SYSTEM,
        PromptMessage(
            "user", f"Image 1: {IMAGE_MARKER}\nImage 2: {IMAGE_MARKER}\nCompare the two pictures.",
            (CAT, DOG),
        ),
    )
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture
def lm(checkpoint):
    return TransformersVLM.from_path(str(checkpoint))


async def stream_all(lm, prompt=ONE_IMAGE, **options):
    generation = lm.stream(prompt, GenerationOptions(**options))
    deltas = [delta async for delta in generation]
    return deltas, generation


def greedy_ids(lm, prompt=ONE_IMAGE, max_new_tokens=12):
    inputs = lm._inputs(prompt.messages)
    options = GenerationOptions(max_new_tokens=max_new_tokens)
    with torch.inference_mode():
        return inputs, list(lm._generate_ids(inputs, options, CancelToken(), Usage()))


def test_from_path_reloads_the_saved_checkpoint(lm):
    assert type(lm.model).__name__ == "LlavaForConditionalGeneration"
    assert type(lm.processor.image_processor).__name__ == "CLIPImageProcessorPil"
    assert lm.capabilities.images and not lm.capabilities.embeddings
    assert lm.capabilities.context_tokens == 2048
    assert lm.image_token == IMAGE_TOKEN
    assert lm.eos_ids == {lm.tokenizer.convert_tokens_to_ids("<|im_end|>")}


async def test_streaming_yields_deltas_that_concatenate_to_the_decoded_output(lm):
    _, ids = greedy_ids(lm, max_new_tokens=16)
    deltas, generation = await stream_all(lm, max_new_tokens=16)
    assert len(deltas) >= 2 and all(deltas)
    expected = lm.tokenizer.decode(
        ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    assert "".join(deltas) == expected
    assert generation.usage.output_tokens == len(ids)


def test_two_images_in_one_message_each_get_their_image_tokens(lm):
    inputs = lm._inputs(TWO_IMAGES.messages)
    image_id = lm.model.config.image_token_id
    assert int((inputs["input_ids"] == image_id).sum()) == 2 * IMAGE_TOKENS
    assert tuple(inputs["pixel_values"].shape) == (2, 3, 32, 32)  # (I, 3, h, w)
    text = lm.tokenizer.decode(inputs["input_ids"][0])
    assert text.index("Image 1:") < text.index(IMAGE_TOKEN) < text.index("Image 2:")


def test_the_images_reach_the_model(lm):
    swapped = Prompt((SYSTEM, PromptMessage("user", TWO_IMAGES.messages[1].text, (DOG, CAT))))
    with torch.inference_mode():
        first = lm._next_logits(lm_cache(lm), **lm._inputs(TWO_IMAGES.messages))  # (1, V)
        second = lm._next_logits(lm_cache(lm), **lm._inputs(swapped.messages))  # (1, V)
    assert not torch.allclose(first, second)


def lm_cache(lm):
    from transformers import DynamicCache

    return DynamicCache(config=lm.model.config)


async def test_two_images_stream_a_reply(lm):
    deltas, generation = await stream_all(lm, TWO_IMAGES, max_new_tokens=8)
    assert deltas
    assert generation.usage.input_tokens == lm._inputs(TWO_IMAGES.messages)["input_ids"].shape[1]


def test_own_loop_matches_model_generate(lm):
    inputs, ours = greedy_ids(lm, TWO_IMAGES, max_new_tokens=20)
    with torch.inference_mode():
        out = lm.model.generate(
            **inputs, max_new_tokens=20, do_sample=False, eos_token_id=sorted(lm.eos_ids)
        )  # (1, T + N)
    theirs = out[0, inputs["input_ids"].shape[1] :].tolist()
    if theirs and theirs[-1] in lm.eos_ids:
        theirs = theirs[:-1]  # generate keeps the EOS it stopped on; our loop does not yield it
    assert ours == theirs


async def test_cancel_after_the_first_delta_stops_within_one_token(lm):
    allow_only(lm.model, printable_ids(lm.tokenizer))  # every token is a delta
    counter = ForwardCounter(lm.model, gate_from=2)  # decode steps wait until the test cancelled
    generation = lm.stream(ONE_IMAGE, GenerationOptions(max_new_tokens=200))
    async for _ in generation:
        generation.cancel()
        tokens_at_cancel, calls_at_cancel = generation.usage.output_tokens, counter.calls
        counter.release.set()
        break
    await generation.aclose()  # returns once the worker thread has finished
    assert tokens_at_cancel == 1
    assert generation.usage.output_tokens <= tokens_at_cancel + 1
    assert counter.calls <= calls_at_cancel + 1
    assert generation.finish_reason == "cancelled"


def test_token_loop_checks_cancel_after_every_token(lm):
    inputs = lm._inputs(ONE_IMAGE.messages)
    options = GenerationOptions(max_new_tokens=50)
    assert_cancel_stops_after_one_token(
        lambda cancel, usage: lm._generate_ids(inputs, options, cancel, usage)
    )


async def test_usage_counts_prompt_and_reply_tokens(lm):
    inputs, ids = greedy_ids(lm, max_new_tokens=10)
    _, generation = await stream_all(lm, max_new_tokens=10)
    assert generation.usage.input_tokens == inputs["input_ids"].shape[1]
    assert generation.usage.input_tokens > IMAGE_TOKENS  # the image's tokens are counted
    assert generation.usage.output_tokens == len(ids)
    assert generation.usage.total_tokens == inputs["input_ids"].shape[1] + len(ids)


async def test_max_new_tokens_ends_with_length(lm):
    allow_only(lm.model, printable_ids(lm.tokenizer))  # no EOS possible
    _, generation = await stream_all(lm, max_new_tokens=5)
    assert generation.usage.output_tokens == 5
    assert generation.finish_reason == "length"


async def test_eos_stops_and_is_not_streamed(lm):
    allow_only(lm.model, lm.eos_ids)
    deltas, generation = await stream_all(lm, max_new_tokens=20)
    assert deltas == [] and generation.usage.output_tokens == 0
    assert generation.finish_reason == "stop"


def test_count_tokens_uses_the_tokenizer(lm):
    text = "What is in this image?"
    assert lm.count_tokens(text) == len(lm.tokenizer.encode(text, add_special_tokens=False))
    assert lm.count_tokens("") == 0


def test_a_typed_image_token_is_not_taken_for_an_image(lm):
    prompt = PromptMessage("user", f"{IMAGE_MARKER} what does {IMAGE_TOKEN} mean?", (CAT,))
    inputs = lm._inputs((SYSTEM, prompt))
    assert int((inputs["input_ids"] == lm.model.config.image_token_id).sum()) == IMAGE_TOKENS


def test_without_chat_templates_the_prompt_reads_role_colon_text(lm):
    processor = make_processor(chat_template=None)
    processor.tokenizer.chat_template = None
    plain = TransformersVLM(lm.model, processor)
    text = plain._chat_text(ONE_IMAGE.messages)
    assert text == (
        "SYSTEM: You are a helpful assistant.\nUSER: <image>\nWhat is in this image?\nASSISTANT:"
    )
    input_ids = plain._inputs(ONE_IMAGE.messages)["input_ids"]  # (1, T)
    assert int((input_ids == lm.model.config.image_token_id).sum()) == IMAGE_TOKENS


async def test_images_given_as_embeddings_are_refused(lm):
    wrong = PromptImage("x", embeddings=np.zeros((4, 32), dtype=np.float32))
    prompt = Prompt((SYSTEM, PromptMessage("user", f"{IMAGE_MARKER} hi", (wrong,))))
    with pytest.raises(ConfigurationError):
        await stream_all(lm, prompt, max_new_tokens=4)


async def test_a_text_only_prompt_works(lm):
    prompt = Prompt((SYSTEM, PromptMessage("user", "Hello there")))
    deltas, generation = await stream_all(lm, prompt, max_new_tokens=6)
    assert generation.finish_reason in ("length", "stop")
    assert generation.usage.input_tokens == lm.count_tokens(lm._chat_text(prompt.messages))


def test_build_needs_a_model_directory():
    with pytest.raises(ConfigurationError, match="llm.model"):
        build(Settings(llm=LLMSettings(adapter="transformers_vlm")))


def test_the_registry_builds_it_from_settings(checkpoint):
    settings = Settings(llm=LLMSettings(adapter="transformers_vlm", model=str(checkpoint)))
    lm = build_language_model(settings)
    assert isinstance(lm, TransformersVLM) and lm.capabilities.images

