"""What the token loops of the transformers adapters (``transformers_local``, ``transformers_vlm``)
share, independent of how a prompt is fed to the model: where a checkpoint is loaded from, the loop
itself (pick a token, stop at EOS, the length cap or a cancel, feed the token back), one forward
pass's last logits, streaming the reply's text as the ids arrive, and what the model says about its
context length and its end-of-sequence ids.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from assistant.errors import ConfigurationError
from assistant.ports import CancelToken, GenerationOptions, Usage

#: The context declared to the prompt builder is the model's, but no more than this: prefill cost
#: grows with it, and on a CPU a longer prompt would be slower than anyone waits for.
MAX_CONTEXT_TOKENS = 8192
#: Used when neither the config nor the tokenizer tells the context length.
FALLBACK_CONTEXT_TOKENS = 2048
#: End-of-turn markers of common chat templates; an EOS id when the template uses them.
TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def model_source(path_or_hub_id: str) -> tuple[str, bool]:
    """What ``from_pretrained`` gets, and whether it is a local directory (then loaded with
    ``local_files_only``: no network)."""
    path = Path(path_or_hub_id).expanduser()
    return (str(path), True) if path.is_dir() else (path_or_hub_id, False)


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether ``model.forward`` can compute the logits of the last positions only."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def last_logits(model: Any, cache: Any, logits_to_keep: bool, **inputs: torch.Tensor) -> torch.Tensor:
    """One forward pass that extends ``cache``; the logits of the last position, ``(1, V)``."""
    extra = {"logits_to_keep": 1} if logits_to_keep else {}
    out = model(**inputs, past_key_values=cache, use_cache=True, **extra)
    return out.logits[:, -1, :].float()  # (1, V)


def token_loop(
    logits: torch.Tensor,
    options: GenerationOptions,
    cancel: CancelToken,
    usage: Usage,
    eos: Collection[int],
    feed: Callable[[int], torch.Tensor],
) -> Generator[int, None, None]:
    """From the prompt's last logits ``(1, V)``: pick a token, yield it and ``feed`` it back for
    the next logits, until an EOS id (not yielded), ``max_new_tokens`` or ``cancel`` (checked
    after every token, so a token held back by the text stream still stops the loop). The last
    token picked is never fed: nothing needs its logits."""
    generator = rng(options.seed)
    for step in range(options.max_new_tokens):
        next_id = pick(logits, options.temperature, options.top_p, generator)
        if next_id in eos:
            return
        usage.output_tokens += 1
        yield next_id
        if cancel.cancelled or step == options.max_new_tokens - 1:
            return
        logits = feed(next_id)  # (1, V)


class DeltaText:
    """A reply's text as its ids arrive: ``feed`` decodes all ids so far and returns the new
    suffix, holding back while the text ends in an incomplete UTF-8 character; ``flush`` returns
    whatever is left at the end."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._emitted = 0

    def feed(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._decode(self._ids)
        if text.endswith("\ufffd") or len(text) <= self._emitted:
            return ""
        delta, self._emitted = text[self._emitted :], len(text)
        return delta

    def flush(self) -> str:
        text = self._decode(self._ids)
        delta, self._emitted = text[self._emitted :], max(len(text), self._emitted)
        return delta


def text_deltas(token_ids: Iterator[int], decode: Callable[[Sequence[int]], str]) -> Iterator[str]:
    """The non-empty deltas of ``DeltaText`` over ``token_ids``, the flushed rest last."""
    text = DeltaText(decode)
    for token_id in token_ids:
        if delta := text.feed(token_id):
            yield delta
    if rest := text.flush():
        yield rest


def pick(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """Greedy when ``temperature == 0``, else temperature + nucleus (top-p) sampling."""
    if temperature <= 0:
        return int(logits.argmax(dim=-1).item())
    probs = torch.softmax(logits[0] / temperature, dim=-1)  # (V,)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)  # (V,), (V,)
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p  # (V,)
        sorted_probs[outside] = 0.0  # the most likely token always stays
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)  # (V,)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def rng(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None  # torch's global generator
    return torch.Generator().manual_seed(seed)


def context_tokens(model: Any, tokenizer: Any) -> int:
    config = model.config
    if hasattr(config, "get_text_config"):  # a multimodal config nests the text model's
        config = config.get_text_config()
    length = getattr(config, "max_position_embeddings", None)
    if not length:
        declared = getattr(tokenizer, "model_max_length", None)
        length = declared if declared and declared < 1_000_000 else FALLBACK_CONTEXT_TOKENS
    return min(int(length), MAX_CONTEXT_TOKENS)


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The tokenizer's EOS, the generation config's EOS ids and the chat template's turn end."""
    found: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            found.add(value)
        elif value:
            found.update(int(v) for v in value)
    vocab = tokenizer.get_vocab()
    template = tokenizer.chat_template or ""
    found.update(vocab[t] for t in TURN_END_TOKENS if t in template and t in vocab)
    if not found:
        raise ConfigurationError("the tokenizer and the generation config name no EOS token")
    return found


__all__ = [
    "FALLBACK_CONTEXT_TOKENS",
    "DeltaText",
    "MAX_CONTEXT_TOKENS",
    "TURN_END_TOKENS",
    "accepts_logits_to_keep",
    "context_tokens",
    "eos_ids",
    "last_logits",
    "model_source",
    "pick",
    "rng",
    "text_deltas",
    "token_loop",
]
