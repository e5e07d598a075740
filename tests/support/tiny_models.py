"""Tiny random language models for tests: byte-level BPE tokenizers trained offline
(``chatml_tokenizer``; ``make_tokenizer``, the ChatML one most tests share), a 2-layer random Llama
over it (``tiny_llama``), a short conversation on its sentences, and hooks that steer or count a
model's forward passes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from assistant.ports import PromptMessage


def chatml_tokenizer(
    sentences: Iterable[str],
    *,
    chat_template: str,
    eos: str = "<|im_end|>",
    extra_special: Sequence[str] = (),
    **tokenizer_kwargs: Any,
) -> Any:
    """A 400-token byte-level BPE trained on ``sentences`` with the ChatML special tokens (and
    ``extra_special`` after them), wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", eos, *extra_special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(sentences, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token=eos,
        pad_token=eos,
        unk_token="<|endoftext|>",
        **tokenizer_kwargs,
    )
    tokenizer.chat_template = chat_template
    return tokenizer


#: A ChatML chat template (SmolLM2's shape) and the sentences ``make_tokenizer`` is trained on.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SENTENCES = [
    "The capital of France is Paris.",
    "Hello there, how are you today?",
    "A small model answers short questions.",
    "Tokens stream one at a time from the model.",
    "You are a helpful assistant. Answer briefly and clearly.",
]
EOS = "<|im_end|>"


def make_tokenizer() -> Any:
    """The ChatML tokenizer trained on ``SENTENCES`` (a transformers fast tokenizer)."""
    return chatml_tokenizer(SENTENCES, chat_template=CHATML, eos=EOS)


def tiny_llama(tokenizer: Any, **config: Any) -> Any:
    """A 2-layer, 32-wide random Llama over ``tokenizer``'s vocabulary, seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(LlamaConfig(**base, **config)).eval()


#: A conversation on the tokenizer's sentences, for tests of turns that reuse the KV cache.
SYSTEM = PromptMessage("system", "You are a helpful assistant. Answer briefly and clearly.")
QUESTIONS = [
    "Hello there, how are you today?",
    "The capital of France is Paris.",
    "A small model answers short questions.",
    "Tokens stream one at a time from the model.",
]


def allow_only(model: Any, token_ids: Iterable[int]) -> Any:
    """Make the model choose among ``token_ids`` only (a hook on the LM head's logits)."""
    import torch

    banned = torch.ones(model.lm_head.out_features, dtype=torch.bool)
    banned[list(token_ids)] = False

    def hook(module: Any, inputs: Any, logits: Any) -> Any:  # logits: (B, T, V)
        return logits.masked_fill(banned, float("-inf"))

    return model.lm_head.register_forward_hook(hook)


def printable_ids(tokenizer: Any) -> list[int]:
    """Tokens that decode on their own to printable ASCII: every one of them yields a delta."""
    special = set(tokenizer.all_special_ids)
    texts = {i: tokenizer.decode([i]) for i in range(len(tokenizer)) if i not in special}
    return [i for i, text in texts.items() if text and text.isascii() and text.isprintable()]


class ForwardCounter:
    """Counts the model's forward passes; from pass ``gate_from`` on, each waits for ``release``."""

    def __init__(self, model: Any, *, gate_from: int | None = None) -> None:
        self.calls = 0
        self.gate_from = gate_from
        self.release = threading.Event()
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module: Any, args: Any) -> None:
        self.calls += 1
        if self.gate_from is not None and self.calls >= self.gate_from:
            self.release.wait(timeout=60)


def assert_cancel_stops_after_one_token(generate: Callable[[Any, Any], Iterator[int]]) -> None:
    """``generate(cancel, usage)``: an adapter's token loop. Cancel is checked in the loop itself,
    not only where a delta is handed over: a token held back (half a UTF-8 character) yields no
    delta, and the loop must still stop right after it."""
    import torch

    from assistant.ports import CancelToken, Usage

    cancel, usage = CancelToken(), Usage()
    with torch.inference_mode():
        tokens = generate(cancel, usage)
        next(tokens)
        cancel.cancel()
        assert list(tokens) == []
    assert usage.output_tokens == 1
