"""Train an image projector on image-caption pairs: LLaVA's stage 1, "feature alignment".

The vision encoder and the language model stay frozen; only the projector (``mlp2x_gelu`` by
default, or ``linear``) learns, so that the LM predicts an image's caption from the projected image
embeddings alone. The sequence is LLaVA's ``plain`` pre-training template, with an optional prompt:

    inputs_embeds  [ image rows (N) | prompt tokens | caption tokens + EOS | padding ]
    labels         [ -100 ...       | -100 ...      | caption ids + EOS    | -100 ... ]
    loss = the frozen LM's next-token cross-entropy on the caption tokens (and EOS) only

The encoder's features never change, so they are computed once per distinct image before training
(kept in memory as float16: 49 x 1280 x 2 bytes = 125 KB per image). Gradients flow through the
frozen LM into the image rows and from there into the projector; AdamW updates the projector alone.

``assistant train-projector`` calls ``run``: load the configured LM and encoder, train, then save
the projector with ``save_projector`` plus ``training.json`` (the run's settings and loss curve).
Loading, encoding and training all run on the process's one torch thread
(``adapters.torch_thread``): a second thread that ran parallel regions would slow every pass.
Serving it: ``ASSISTANT_VISION__PROJECTOR=<that directory>``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from tqdm import tqdm
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"training a projector needs torch, numpy, pillow and tqdm ({exc}); "
        "install the extras: pip install 'assistant[vision,local-llm]'"
    ) from exc

from adapters.llm.decoding import accepts_logits_to_keep
from adapters.torch_thread import on_torch_thread
from adapters.vision.projector import Projector, build_projector, save_projector
from assistant.errors import ConfigurationError

TRAINABLE = ("mlp2x_gelu", "linear")
TRAINING_FILE = "training.json"
IGNORE = -100  # the label of a position that is not trained (image rows, prompt, padding)


@dataclass(frozen=True)
class TrainConfig:
    projector: str = "mlp2x_gelu"
    epochs: int = 1
    lr: float = 1e-3  # LLaVA-1.5's stage-1 learning rate
    batch_size: int = 8
    #: Optimizer steps to run, cycling over the data as needed; overrides ``epochs`` when set.
    max_steps: int | None = None
    seed: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    #: Text between the image and the caption, not trained on ("" is LLaVA's ``plain`` template).
    prompt: str = ""

    def __post_init__(self) -> None:
        if self.projector not in TRAINABLE:
            raise ConfigurationError(
                f"projector {self.projector!r} cannot be trained; "
                f"choose one of {', '.join(TRAINABLE)}"
            )
        if min(self.epochs, self.batch_size, 1 if self.max_steps is None else self.max_steps) < 1:
            raise ConfigurationError("epochs, batch size and max steps must be at least 1")
        if not self.lr > 0:
            raise ConfigurationError(f"the learning rate must be positive, got {self.lr}")

    def total_steps(self, examples: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return self.epochs * math.ceil(examples / self.batch_size)


@dataclass(frozen=True)
class CaptionPair:
    image: Path
    caption: str


@dataclass
class TrainResult:
    projector: Projector
    initial_loss: float  # over the whole training set, before the first step
    final_loss: float  # ... and after the last
    losses: list[float]  # each step's batch loss
    images: int
    pairs: int
    seconds: float

    @property
    def steps(self) -> int:
        return len(self.losses)

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "initial_loss": round(self.initial_loss, 4),
            "final_loss": round(self.final_loss, 4),
            "first_step_loss": round(self.losses[0], 4) if self.losses else None,
            "last_step_loss": round(self.losses[-1], 4) if self.losses else None,
            "images": self.images,
            "pairs": self.pairs,
            "seconds": round(self.seconds, 1),
            "losses": [round(x, 4) for x in self.losses],
        }


# -- data -----------------------------------------------------------------------------------------


def load_pairs(images_dir: str | Path, captions_file: str | Path) -> list[CaptionPair]:
    """``{"image": "file.png", "caption": "..."}`` per line, images relative to ``images_dir``."""
    images_dir, captions_file = Path(images_dir).expanduser(), Path(captions_file).expanduser()
    try:
        lines = captions_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the captions file {captions_file}: {exc}") from exc
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{captions_file}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{where}: not a JSON object: {exc}") from exc
        image = record.get("image") if isinstance(record, dict) else None
        caption = record.get("caption") if isinstance(record, dict) else None
        if not isinstance(image, str) or not isinstance(caption, str) or not caption.strip():
            raise ConfigurationError(f'{where}: expected {{"image": "...", "caption": "..."}}')
        path = images_dir / image
        if not path.is_file():
            raise ConfigurationError(f"{where}: no image file {path}")
        pairs.append(CaptionPair(path, caption.strip()))
    if not pairs:
        raise ConfigurationError(f"{captions_file} holds no image-caption pairs")
    return pairs


def read_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 RGB, (H, W, 3)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, Image.DecompressionBombError) as exc:
        raise ConfigurationError(f"cannot read the image {path}: {exc}") from exc


def encode_images(encoder: Any, paths: Sequence[Path], *, progress: bool = True) -> torch.Tensor:
    """(M, P, D) float16: the frozen encoder's patch features of each image, computed once."""
    rows = []
    for path in tqdm(paths, desc="encoding images", unit="image", disable=not progress):
        features = encoder._encode_impl(read_rgb(path))  # blocking; patches (P, D)
        rows.append(torch.from_numpy(np.asarray(features.patches, dtype=np.float32)).half())
    return torch.stack(rows)  # (M, P, D)


@dataclass(frozen=True)
class Example:
    image: int  # row of the feature table
    ids: tuple[int, ...]  # prompt + caption + EOS
    labels: tuple[int, ...]  # IGNORE on the prompt, the ids on the caption + EOS


def tokenize_pairs(
    tokenizer: Any, pairs: Sequence[CaptionPair], image_index: dict[Path, int], prompt: str = ""
) -> list[Example]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigurationError("the tokenizer has no EOS token to end a caption with")
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else []
    examples = []
    for pair in pairs:
        caption = list(tokenizer(pair.caption, add_special_tokens=False)["input_ids"]) + [eos]
        examples.append(
            Example(image_index[pair.image], tuple(prompt_ids + caption),
                    tuple([IGNORE] * len(prompt_ids) + caption))
        )  # fmt: skip
    return examples


@dataclass(frozen=True)
class Batch:
    features: torch.Tensor  # (B, P, D) float32
    ids: torch.Tensor  # (B, T) long, right-padded
    labels: torch.Tensor  # (B, T) long, IGNORE on prompt and padding
    mask: torch.Tensor  # (B, T) long, 1 on real tokens


def collate(features: torch.Tensor, examples: Sequence[Example], pad_id: int) -> Batch:
    B, T = len(examples), max(len(e.ids) for e in examples)
    ids = torch.full((B, T), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)  # (B, T)
    mask = torch.zeros((B, T), dtype=torch.long)  # (B, T)
    for row, example in enumerate(examples):
        n = len(example.ids)
        ids[row, :n] = torch.tensor(example.ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    rows = features[[e.image for e in examples]].float()  # (B, P, D)
    return Batch(rows, ids, labels, mask)


# -- the objective --------------------------------------------------------------------------------


def caption_loss(model: Any, projector: Projector, batch: Batch) -> tuple[torch.Tensor, int]:
    """The LM's mean next-token cross-entropy over the labelled tokens of ``batch`` given the
    projected image rows in front of them, and how many tokens that is."""
    image = projector(batch.features)  # (B, P, D) -> (B, N, H)
    text = model.get_input_embeddings()(batch.ids)  # (B, T, H)
    B, N, T = image.shape[0], image.shape[1], text.shape[1]
    embeds = torch.cat([image.to(text.dtype), text], dim=1)  # (B, N + T, H)
    mask = torch.cat([torch.ones(B, N, dtype=torch.long), batch.mask], dim=1)  # (B, N + T)
    # Position N - 1 + j predicts text token j: only the last T + 1 positions' logits are needed.
    extra = {"logits_to_keep": T + 1} if accepts_logits_to_keep(model) else {}
    logits = model(inputs_embeds=embeds, attention_mask=mask, use_cache=False, **extra).logits
    logits = logits[:, -(T + 1) : -1].float()  # (B, T, V): positions N - 1 .. N + T - 2
    count = int((batch.labels != IGNORE).sum())
    loss = F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE)
    return loss, count  # loss: () mean over the ``count`` labelled tokens


@torch.no_grad()
def dataset_loss(
    model: Any, projector: Projector, features: torch.Tensor, examples: Sequence[Example],
    batch_size: int, pad_id: int,
) -> float:  # fmt: skip
    """The token-weighted mean caption loss over all ``examples``, in order, without gradients."""
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(features, examples[start : start + batch_size], pad_id)
        loss, n = caption_loss(model, projector, batch)
        total, count = total + loss.item() * n, count + n
    return total / max(count, 1)


# -- training -------------------------------------------------------------------------------------


def _batches(
    examples: Sequence[Example], batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[list[Example]]:
    """``steps`` batches: each epoch a new shuffle, its last batch possibly smaller."""
    done = 0
    while True:
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            if done == steps:
                return
            yield [examples[i] for i in order[start : start + batch_size]]
            done += 1


def _fit(
    model: Any, projector: Projector, features: torch.Tensor, examples: Sequence[Example],
    config: TrainConfig, pad_id: int, progress: bool,
) -> list[float]:  # fmt: skip
    """AdamW on the projector's parameters; returns each step's batch loss. A tqdm bar shows the
    running loss (an exponential moving average)."""
    optimizer = torch.optim.AdamW(
        projector.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps = config.total_steps(len(examples))
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    running = None
    projector.train()
    with tqdm(total=steps, desc="train-projector", unit="step", disable=not progress) as bar:
        for chunk in _batches(examples, config.batch_size, steps, generator):
            loss, _ = caption_loss(model, projector, collate(features, chunk, pad_id))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(projector.parameters(), config.max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
            running = losses[-1] if running is None else 0.9 * running + 0.1 * losses[-1]
            bar.set_postfix(loss=f"{running:.3f}")
            bar.update()
    projector.eval()
    return losses


@on_torch_thread  # the process's one thread of torch work, training included
def train_projector(
    model: Any, tokenizer: Any, encoder: Any, pairs: Sequence[CaptionPair], config: TrainConfig,
    *, progress: bool = True,
) -> TrainResult:  # fmt: skip
    """Train a new projector from ``config`` for ``model`` (a transformers causal LM, frozen in
    place: eval mode, no parameter gradients) on ``pairs``, features from ``encoder``."""
    started = time.monotonic()
    model.eval().requires_grad_(False)
    paths = list(dict.fromkeys(pair.image for pair in pairs))  # distinct images, in order
    features = encode_images(encoder, paths, progress=progress)  # (M, P, D)
    index = {path: row for row, path in enumerate(paths)}
    examples = tokenize_pairs(tokenizer, pairs, index, config.prompt)
    pad_id = tokenizer.pad_token_id
    pad_id = tokenizer.eos_token_id if pad_id is None else pad_id  # padding is masked anyway
    torch.manual_seed(config.seed)
    hidden = model.get_input_embeddings().embedding_dim
    projector = build_projector(config.projector, in_dim=features.shape[-1], hidden_size=hidden)
    evaluate = (model, projector, features, examples, config.batch_size, pad_id)
    initial = dataset_loss(*evaluate)
    losses = _fit(model, projector, features, examples, config, pad_id, progress)
    final = dataset_loss(*evaluate)
    return TrainResult(
        projector, initial, final, losses, len(paths), len(pairs), time.monotonic() - started
    )


def save_training(result: TrainResult, out_dir: str | Path, **meta: Any) -> Path:
    """The projector (``save_projector``) and ``training.json`` (``meta`` + the loss curve)."""
    folder = save_projector(result.projector, out_dir)
    summary = {**meta, **result.summary(), "identity": result.projector.identity}
    (folder / TRAINING_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return folder


def load_models(settings: Any) -> tuple[Any, Any, Any, str]:
    """The local transformers LM's model and tokenizer (``settings.llm.model``, or SmolLM2, prepared
    once), the configured vision encoder, and a name for the LM."""
    from adapters.llm import transformers_local
    from assistant.registry import build_vision_encoder

    lm = transformers_local.build(settings)  # TransformersLocalLM.from_path(...)
    name = settings.llm.model or "SmolLM2-135M-Instruct"
    return lm.model, lm.tokenizer, build_vision_encoder(settings), name


def run(
    settings: Any, images_dir: str | Path, captions_file: str | Path, out_dir: str | Path,
    config: TrainConfig, *, progress: bool = True,
) -> TrainResult:  # fmt: skip
    """``assistant train-projector``: read the pairs (failing before any model loads), load the
    models, train, save into ``out_dir``."""
    pairs = load_pairs(images_dir, captions_file)
    model, tokenizer, encoder, lm_name = load_models(settings)
    result = train_projector(model, tokenizer, encoder, pairs, config, progress=progress)
    save_training(
        result, out_dir,
        projector=config.projector, language_model=lm_name,
        encoder=getattr(encoder, "name", type(encoder).__name__),
        epochs=config.epochs, max_steps=config.max_steps, lr=config.lr,
        batch_size=config.batch_size, seed=config.seed, prompt=config.prompt,
    )  # fmt: skip
    return result


__all__ = [
    "CaptionPair",
    "TrainConfig",
    "TrainResult",
    "caption_loss",
    "load_pairs",
    "run",
    "save_training",
    "train_projector",
]
