"""A tiny random LLaVA built offline from configs, for the native VLM adapter's tests: a 1-layer
CLIP vision tower on 32x32 images (8x8 patches), a 2-layer Llama, a byte-level BPE tokenizer trained
here with ``<image>`` as a special token, and a ``LlavaProcessor`` with the PIL image processor (no
torchvision). ``save_tiny_llava(dir)`` writes model + processor as a VLM checkpoint directory.

The vision tower yields (32/8)^2 = 16 patches plus CLS; with ``vision_feature_select_strategy
"default"`` the CLS feature is dropped, so the processor expands each ``<image>`` to
16 + 1 (``num_additional_image_tokens``) - 1 = 16 image tokens: exactly the features the model
splices in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.tiny_models import chatml_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 16 per image
IMAGE_TOKEN = "<image>"
EOS = "<|im_end|>"
#: A LLaVA-style processor template: content is a list of {"type": "image"} / {"type": "text"}.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SENTENCES = [
    "The capital of France is Paris.",
    "Hello there, how are you today?",
    "A small model describes what it sees in a picture.",
    "Tokens stream one at a time from the model.",
    "You are a helpful assistant. Answer briefly and clearly.",
    "What is in this image? Compare the two pictures.",
]


def make_tokenizer() -> Any:
    return chatml_tokenizer(
        SENTENCES,
        chat_template=CHAT_TEMPLATE,
        eos=EOS,
        extra_special=(IMAGE_TOKEN,),
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )


def make_processor(
    tokenizer: Any | None = None, *, chat_template: str | None = CHAT_TEMPLATE
) -> Any:
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer or make_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS feature
        chat_template=chat_template,
        image_token=IMAGE_TOKEN,
    )


def make_model(tokenizer: Any, *, seed: int = 0) -> Any:
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=16,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,  # room for the prompt builder's 576-token image estimate
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval()


def build_tiny_llava(*, seed: int = 0) -> tuple[Any, Any]:
    """(model, processor), random weights, in memory."""
    processor = make_processor()
    return make_model(processor.tokenizer, seed=seed), processor


def save_tiny_llava(directory: Path, *, seed: int = 0) -> Path:
    """Write a tiny random LLaVA checkpoint (model + processor) into ``directory``."""
    model, processor = build_tiny_llava(seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
