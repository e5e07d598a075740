"""A native transformers vision-language model (LLaVA and other ``AutoModelForImageTextToText``
checkpoints) with its processor, behind the ``LanguageModel`` port. It declares ``images=True``:
the orchestrator hands it each image's decoded pixels (``PromptImage.pixels``) and one
``IMAGE_MARKER`` per image in the message text.

    prompt messages -> chat text (each IMAGE_MARKER -> the processor's image token, e.g. "<image>")
    -> processor(text, PIL images) -> input_ids (1, T) with each image token expanded to the
       image's N feature positions, attention_mask (1, T), pixel_values (I, 3, h, w)
    -> prefill: one forward pass with pixel_values (the vision tower runs once, here)
    -> decode: one token per step against the KV cache, no pixel_values; cancel checked per token

Like ``transformers_local``, this is our own token loop rather than ``model.generate``, so that a
cancel stops within one token and usage is exact. There is no KV-cache reuse across turns here.
The forward passes run on the process's one torch thread (``adapters.torch_thread``).

Not batched (generations run one at a time, unlike ``transformers_local``'s continuous batching):
the prefill is the model's own forward with ``pixel_values`` (its vision tower and the merge of the
image features at the image tokens happen inside it, per call), and the packed pass
(``adapters.llm.packed``) needs what only the language model's own layers give: one position id
per token, SDPA attention behind ``sdpa_gqa_attention`` and a ``DynamicCache`` of full-attention
layers. An ``AutoModelForImageTextToText`` checkpoint's language model may be any architecture
(Qwen2-VL's multimodal rotary positions are three per token; Mistral- or Gemma-based ones have
sliding-window layers), so packing is not correct for all of them. The decode steps of a
LLaVA-style model (a Llama inside) could be packed once each prompt has been prefilled alone; with
one VLM session at a time in practice on this CPU, that is left for when it is needed.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from typing import Any

try:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, DynamicCache
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the transformers_vlm language model needs torch, transformers and pillow ({exc}); "
        "install the extra: pip install 'assistant[local-llm]'"
    ) from exc

from adapters.llm.decoding import (
    TURN_END_TOKENS,
    accepts_logits_to_keep,
    context_tokens,
    eos_ids,
    last_logits,
    model_source,
    text_deltas,
    token_loop,
)
from adapters.torch_thread import iterate_on_torch_thread, on_torch_thread
from assistant.config import Settings
from assistant.errors import ConfigurationError, ContextLengthError
from assistant.ports import (
    IMAGE_MARKER,
    CancelToken,
    GenerationOptions,
    LanguageModel,
    LanguageModelCapabilities,
    Prompt,
    PromptMessage,
    Usage,
    iterate_in_thread,
)


class TransformersVLM(LanguageModel):
    """Streams a chat reply about text and images from a built VLM and its processor."""

    def __init__(
        self,
        model: Any,  # transformers.PreTrainedModel for image-text-to-text (e.g. Llava...)
        processor: Any,  # its ProcessorMixin: tokenizer + image processor, with an image token
        *,
        name: str = "transformers_vlm",
        threads: int = 0,
        token_timeout_s: float = 120.0,
    ) -> None:
        self.tokenizer = getattr(processor, "tokenizer", None)
        if self.tokenizer is None or getattr(processor, "image_processor", None) is None:
            raise ConfigurationError(f"{name}: the processor has no tokenizer or image processor")
        self.image_token = getattr(processor, "image_token", None) or getattr(
            self.tokenizer, "image_token", None
        )
        if not self.image_token:
            raise ConfigurationError(f"{name}: the processor names no image token")
        if threads > 0:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.token_timeout_s = token_timeout_s
        self.capabilities = LanguageModelCapabilities(
            images=True, embeddings=False, context_tokens=context_tokens(model, self.tokenizer)
        )
        self.eos_ids = frozenset(eos_ids(model, self.tokenizer) | self._turn_end_ids())
        self._logits_to_keep = accepts_logits_to_keep(model)
        # One model instance serves every session: generations run one at a time.
        self._generation_lock = threading.Lock()
        # The Rust tokenizer is not safe to use from two threads at once; calls are short.
        self._tokenizer_lock = threading.Lock()

    @classmethod
    @on_torch_thread
    def from_path(cls, path_or_hub_id: str, *, threads: int = 0, **kw: Any) -> TransformersVLM:
        """Load the model (``AutoModelForImageTextToText``, else ``LlavaForConditionalGeneration``)
        and its ``AutoProcessor``, fp32 in eval mode, from a local directory (``local_files_only``:
        no network) or a hub id. On the torch thread, like its passes."""
        if threads > 0:
            torch.set_num_threads(threads)
        source, local = model_source(path_or_hub_id)
        processor = AutoProcessor.from_pretrained(source, local_files_only=local)
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                source, dtype=torch.float32, local_files_only=local
            )
        except ValueError:  # a config the auto class does not map; LLaVA's class may still load it
            from transformers import LlavaForConditionalGeneration

            model = LlavaForConditionalGeneration.from_pretrained(
                source, dtype=torch.float32, local_files_only=local
            )
        return cls(model.eval(), processor, threads=threads, **kw)

    # -- token accounting -------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _turn_end_ids(self) -> set[int]:
        """End-of-turn markers the processor's own chat template uses (e.g. ``<|im_end|>``)."""
        template = _template_text(getattr(self.processor, "chat_template", None))
        vocab = self.tokenizer.get_vocab()
        return {vocab[t] for t in TURN_END_TOKENS if t in template and t in vocab}

    # -- the prompt -------------------------------------------------------------------------------

    def _chat_text(self, messages: Sequence[PromptMessage]) -> str:
        """The prompt as text, one image token per image: through the processor's chat template
        (content as text/image parts), else the tokenizer's (content as text), else "ROLE: text"."""
        if getattr(self.processor, "chat_template", None):
            chat = [{"role": m.role, "content": self._parts(m.text)} for m in messages]
            return self.processor.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=False
            )
        texts = [self._clean(m.text).replace(IMAGE_MARKER, self.image_token) for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            chat = [{"role": m.role, "content": t} for m, t in zip(messages, texts, strict=True)]
            with self._tokenizer_lock:
                return self.tokenizer.apply_chat_template(
                    chat, add_generation_prompt=True, tokenize=False
                )
        lines = [f"{m.role.upper()}: {t}" for m, t in zip(messages, texts, strict=True)]
        return "\n".join([*lines, "ASSISTANT:"])

    def _clean(self, text: str) -> str:
        """A literal image token typed by a user would ask for an image that is not there."""
        return text.replace(self.image_token, "")

    def _parts(self, text: str) -> list[dict[str, str]]:
        """``"a <|image|> b"`` -> text, image and text parts for a multimodal chat template."""
        parts: list[dict[str, str]] = []
        for index, piece in enumerate(self._clean(text).split(IMAGE_MARKER)):
            if index:
                parts.append({"type": "image"})
            if piece:
                parts.append({"type": "text", "text": piece})
        return parts

    def _inputs(self, messages: Sequence[PromptMessage]) -> dict[str, torch.Tensor]:
        """The processor's tensors for the prompt: input_ids (1, T), attention_mask (1, T) and,
        with images, pixel_values (I, 3, h, w) (plus what else the model's processor adds)."""
        images = [image for message in messages for image in message.images]
        if any(image.pixels is None for image in images):
            raise ConfigurationError(f"{self.name} takes images as pixels, not embeddings")
        text = self._chat_text(messages)
        tokens = text.count(self.image_token)
        if tokens != len(images):
            raise ValueError(f"{tokens} image tokens in the prompt for {len(images)} images")
        pictures = [Image.fromarray(image.pixels).convert("RGB") for image in images]
        bos = self.tokenizer.bos_token
        with self._tokenizer_lock:  # a template that writes the BOS itself gets no second one
            inputs = self.processor(
                text=[text],
                images=pictures or None,
                return_tensors="pt",
                add_special_tokens=not (bos and text.startswith(bos)),
            )
        return dict(inputs)

    # -- generation -------------------------------------------------------------------------------

    def _stream_impl(
        self, prompt: Prompt, options: GenerationOptions, cancel: CancelToken, usage: Usage
    ) -> AsyncIterator[str]:
        def produce() -> Iterator[str]:  # runs in a worker thread, image processing included
            inputs = self._inputs(prompt.messages)
            length = int(inputs["input_ids"].shape[1])
            if length >= self.capabilities.context_tokens:
                raise ContextLengthError(
                    f"the prompt takes {length} tokens (images included); {self.name} holds "
                    f"{self.capabilities.context_tokens}"
                )
            usage.input_tokens = length
            with self._generation_lock:
                steps = self._generate_ids(inputs, options, cancel, usage)
                # The forward passes run on the torch thread, one hop per token.
                ids = iterate_on_torch_thread(steps, torch.inference_mode)
                try:
                    yield from self._text_deltas(ids)
                finally:
                    ids.close()

        return iterate_in_thread(produce, cancel)

    def _generate_ids(
        self,
        inputs: dict[str, torch.Tensor],
        options: GenerationOptions,
        cancel: CancelToken,
        usage: Usage,
    ) -> Generator[int, None, None]:
        """The token loop: prefill the prompt with its images, then one token per step against the
        KV cache. Yields each new token id (an EOS ends the loop and is not yielded). Blocking; call
        it under ``torch.inference_mode()``."""
        cache = DynamicCache(config=self.model.config)
        mask = inputs.get("attention_mask")  # (1, T)
        logits = self._next_logits(cache, **inputs)  # (1, V): the vision tower runs here only

        def feed(next_id: int) -> torch.Tensor:
            nonlocal mask
            ids = torch.tensor([[next_id]], dtype=torch.long)  # (1, 1)
            step_inputs: dict[str, torch.Tensor] = {"input_ids": ids}
            if mask is not None:
                mask = torch.cat([mask, torch.ones_like(ids)], dim=1)  # (1, T + step + 1)
                step_inputs["attention_mask"] = mask
            return self._next_logits(cache, **step_inputs)  # (1, V)

        yield from token_loop(logits, options, cancel, usage, self.eos_ids, feed)

    def _next_logits(self, cache: Any, **inputs: torch.Tensor) -> torch.Tensor:
        return last_logits(self.model, cache, self._logits_to_keep, **inputs)

    def _text_deltas(self, token_ids: Iterator[int]) -> Iterator[str]:
        return text_deltas(token_ids, self._decode)

    def _decode(self, ids: Sequence[int]) -> str:
        with self._tokenizer_lock:
            return self.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )


def _template_text(template: Any) -> str:
    """A chat template as one string (a processor may hold several, by name)."""
    if isinstance(template, dict):
        return "".join(str(t) for t in template.values())
    return str(template or "")


# -- the registry's entry point -------------------------------------------------------------------


def build(settings: Settings) -> TransformersVLM:
    if not settings.llm.model:
        raise ConfigurationError(
            "the transformers_vlm language model needs llm.model: a local directory (or hub id) "
            "of a vision-language checkpoint with its processor, e.g. a LLaVA folder"
        )
    return TransformersVLM.from_path(
        settings.llm.model,
        threads=settings.llm.threads,
        token_timeout_s=settings.llm.token_timeout_s,
    )


__all__ = ["TransformersVLM", "build"]
