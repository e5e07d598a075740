"""Single-stream decoding speed of the local model, and how much each faster option changes its
greedy tokens, every option against fp32 measured side by side in the same run.

Two levels:

- ``stream_tokens_per_s``: through the public ``LanguageModel.stream()`` (the scheduler, the torch
  thread, text streaming: what a user sees); tokens after the first / time after the first.
  ``bench.ttft`` reports it for ``precision="bf16"`` against fp32 (``tokens_per_s``,
  ``tokens_per_s_baseline``, ``decode_speedup``).
- ``survey``: bare forward passes on the models as loaded for each option (``OPTIONS``: fp32, bf16,
  int8 dynamic quantisation of the Linear layers, eager attention instead of SDPA), one greedy
  loop for all, so the ratios compare the models only. With ``agreement_vs_fp32``: the share of
  the fp32 reply's tokens each option picks itself when fed that reply (teacher-forced), and
  ``identical_prefix_share``: the share of tokens before the first that differs, free-running.

Repeats alternate the order of the options, and ratios are medians of per-repeat ratios: the
machine is shared and noisy (see ``bench.ttft``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

#: Replies that run past the tokens asked for (no EOS before them), to time decoding alone.
LONG_PROMPTS = (
    "Tell me a long story about a dragon.",
    "Write a long poem about the sea.",
)
#: Prompts whose greedy replies are compared with fp32's.
AGREEMENT_PROMPTS = (
    "What is the capital of France?",
    "Tell me a story about a dragon.",
    "How do I make a cup of tea?",
    "Explain photosynthesis in simple words.",
    "Write a haiku about the sea.",
    "What are three tips for better sleep?",
    "Who was Albert Einstein?",
    "Give me a recipe for pancakes.",
)
SYSTEM = "You are a helpful assistant."
OPTIONS = ("fp32", "bf16", "int8", "int8-decode", "eager")


def adopted_precision() -> str:
    """The faster path ``bench.ttft`` times against fp32 (``LLMSettings.precision``) on this CPU:
    ``bf16`` where the CPU multiplies it itself (avx512_bf16 or AMX), else ``int8-decode``
    (without them bf16 decodes at fp32's speed: ``adapters.llm.precision``)."""
    from adapters.llm.precision import bf16_in_hardware

    return "bf16" if bf16_in_hardware() else "int8-decode"


# -- through the public API -----------------------------------------------------------------------


async def stream_tokens_per_s(lm: Any, question: str, tokens: int) -> float:
    """Greedy ``tokens`` for ``question`` through ``lm.stream()``: tokens per second after the
    first (the first one's time is the prefill's: ``ttft_by_turn`` measures that)."""
    from assistant.ports import GenerationOptions, Prompt, PromptMessage

    prompt = Prompt((PromptMessage("system", SYSTEM), PromptMessage("user", question)))
    generation = lm.stream(prompt, GenerationOptions(max_new_tokens=tokens, temperature=0.0))
    first = None
    async for _ in generation:
        first = time.perf_counter() if first is None else first
    elapsed = time.perf_counter() - first if first is not None else 0.0
    decoded = generation.usage.output_tokens - 1
    if decoded < 2 or elapsed <= 0:
        raise RuntimeError(f"too short a reply to time decoding: {decoded + 1} tokens")
    return decoded / elapsed


async def stream_side_by_side(
    lms: dict[str, Any], tokens: int, repeats: int
) -> dict[str, list[float]]:
    """Each adapter's ``stream_tokens_per_s`` once per repeat, in an order that alternates."""
    names = list(lms)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        question = LONG_PROMPTS[r % len(LONG_PROMPTS)]
        for name in names if r % 2 == 0 else names[::-1]:
            rates[name].append(await stream_tokens_per_s(lms[name], question, tokens))
    return rates


def median_ratio(values: Sequence[float], baseline: Sequence[float]) -> float:
    return round(statistics.median(v / b for v, b in zip(values, baseline)), 3)


# -- bare forward passes --------------------------------------------------------------------------


def load_option(path: str, option: str) -> Any:
    """The raw transformers model as ``option`` has it (eval mode, GQA attention as the adapter
    sets it)."""
    import torch
    from transformers import AutoModelForCausalLM

    from adapters.llm.kv_cache import use_gqa_attention

    dtype = torch.bfloat16 if option == "bf16" else torch.float32
    attention = "eager" if option == "eager" else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=attention, local_files_only=True
    ).eval()
    if option == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    if option == "int8-decode":
        from adapters.llm.prepacked import quantise_one_row_products

        quantise_one_row_products(model)
    use_gqa_attention(model)
    return model


def prompt_ids(tokenizer: Any, question: str) -> list[int]:
    chat = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def greedy_ids(
    model: Any, ids: Sequence[int], tokens: int, eos: Sequence[int] = ()
) -> tuple[list[int], float]:
    """Greedy ``tokens`` after ``ids`` (stopping at an ``eos`` id, not included) with the adapter's
    KV cache; the ids and the decode rate (tokens per second after the first)."""
    import torch

    from adapters.llm.kv_cache import new_cache

    with torch.inference_mode():
        cache = new_cache(model.config)
        step: Callable[[torch.Tensor], torch.Tensor] = lambda x: model(  # noqa: E731
            input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1
        ).logits[0, -1]
        next_id = int(step(torch.tensor([list(ids)])).float().argmax())
        out: list[int] = []
        start = time.perf_counter()
        while next_id not in eos and len(out) < tokens:
            out.append(next_id)
            if len(out) < tokens:
                next_id = int(step(torch.tensor([[next_id]])).float().argmax())
        elapsed = time.perf_counter() - start
    return out, (len(out) - 1) / elapsed if len(out) > 1 else 0.0


def forced_agreement(
    model: Any, ids: Sequence[int], reference: Sequence[int], *, one_row: bool = False
) -> int:
    """How many tokens of ``reference`` (a reply to ``ids``) the model picks itself, each after
    the reference's tokens before it (teacher-forced): in one pass, or with ``one_row`` a pass per
    token on the cache, as decoding runs (``int8-decode`` multiplies one-row inputs only)."""
    import torch

    from adapters.llm.kv_cache import new_cache

    with torch.inference_mode():
        if not one_row:
            logits = model(input_ids=torch.tensor([[*ids, *reference]]), use_cache=False).logits
            span = logits[0, len(ids) - 1 : len(ids) + len(reference) - 1]
            picks = span.float().argmax(-1).tolist()
        else:
            cache = new_cache(model.config)
            fed, picks = list(ids), []
            for token in reference:
                logits = model(
                    input_ids=torch.tensor([fed]), past_key_values=cache, use_cache=True,
                    logits_to_keep=1,
                ).logits  # fmt: skip
                picks.append(int(logits[0, -1].float().argmax()))
                fed = [token]
    return sum(int(a == b) for a, b in zip(picks, reference))


def agreement_vs_fp32(
    reference: Any, model: Any, tokenizer: Any, prompts: Sequence[str], tokens: int, eos: Any = (),
    *, one_row: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """``agreement``: the share of the fp32 replies' tokens ``model`` picks teacher-forced (with
    ``one_row``: a pass per token, ``forced_agreement``);
    ``identical_prefix_share``: the share before the first token its own greedy reply differs in;
    ``tokens``: the fp32 replies' tokens counted."""
    total = forced = prefix = 0
    for question in prompts:
        ids = prompt_ids(tokenizer, question)
        expected, _ = greedy_ids(reference, ids, tokens, eos)
        own, _ = greedy_ids(model, ids, tokens, eos)
        same = next((k for k, (a, b) in enumerate(zip(own, expected)) if a != b), None)
        prefix += min(len(own), len(expected)) if same is None else same
        forced += forced_agreement(model, ids, expected, one_row=one_row)
        total += len(expected)
    return {
        "agreement": round(forced / total, 3),
        "identical_prefix_share": round(prefix / total, 3),
        "tokens": total,
    }


def survey(
    path: str, *, tokens: int = 48, repeats: int = 5, prompts: Sequence[str] = AGREEMENT_PROMPTS
) -> dict[str, Any]:
    """Every ``OPTIONS`` model loaded at once, decoding ``tokens`` greedy tokens in turn per repeat
    (bare forward passes); per option the median tokens/s, the median ratio to fp32 and the greedy
    agreement with fp32 over ``prompts``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    models = {option: load_option(path, option) for option in OPTIONS}
    ids = prompt_ids(tokenizer, LONG_PROMPTS[0])
    for model in models.values():
        greedy_ids(model, ids, 4)  # warm-up
    rates: dict[str, list[float]] = {option: [] for option in OPTIONS}
    for r in range(repeats):
        for option in OPTIONS if r % 2 == 0 else OPTIONS[::-1]:
            rates[option].append(greedy_ids(models[option], ids, tokens)[1])
    result: dict[str, Any] = {}
    for option in OPTIONS:
        result[option] = {
            "tokens_per_s": round(statistics.median(rates[option]), 1),
            "ratio_vs_fp32": median_ratio(rates[option], rates["fp32"]),
        }
        if option != "fp32":
            result[option] |= agreement_vs_fp32(
                models["fp32"], models[option], tokenizer, prompts, tokens, eos,
                one_row=option == "int8-decode",
            )  # fmt: skip
    return {"options": result, "tokens": tokens, "repeats": repeats}


__all__ = [
    "AGREEMENT_PROMPTS",
    "LONG_PROMPTS",
    "OPTIONS",
    "adopted_precision",
    "agreement_vs_fp32",
    "forced_agreement",
    "greedy_ids",
    "load_option",
    "median_ratio",
    "prompt_ids",
    "stream_side_by_side",
    "stream_tokens_per_s",
    "survey",
]
