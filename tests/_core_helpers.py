"""Shared pieces of the core test suite: one thread, slow oracles, tiny offline models.

Imported by the tests/test_*.py files of the mplib core (not a conftest, so other suites are not
affected). Nothing here downloads: every model is built from a config object.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from hypothesis import HealthCheck, settings
from torch import nn

torch.set_num_threads(1)  # float sums depend on the thread count; the machine is shared

# Small, deterministic hypothesis runs: the suite must stay well under a minute.
FAST = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


# -- oracles -----------------------------------------------------------------------------------
def exact_ceil(keep_ratio: Fraction | float | str, numel: int) -> int:
    """``ceil(keep_ratio * numel)`` in exact rational arithmetic."""
    return math.ceil(Fraction(keep_ratio) * numel)


def oracle_topk_indices(values: list[float], k: int) -> set[int]:
    """The k entries a stable descending sort puts first: larger value first, then lower index."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return set(order[:k])


def oracle_topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    flat = [float(v) for v in scores.detach().reshape(-1)]
    keep = oracle_topk_indices(flat, k)
    out = torch.zeros(len(flat), dtype=scores.dtype)
    for i in keep:
        out[i] = 1
    return out.reshape(scores.shape)


def oracle_global(tensors: list[torch.Tensor], k: int, absolute: bool = False):
    """Slow global Top-k: concatenate, stable sort descending (ties: earlier tensor, lower index).

    Returns (k-th largest value, per-tensor budgets, per-tensor masks).
    """
    entries = []
    for ti, t in enumerate(tensors):
        for j, v in enumerate(t.detach().reshape(-1).tolist()):
            entries.append((abs(v) if absolute else v, ti, j))
    entries.sort(key=lambda e: (-e[0], e[1], e[2]))
    chosen = entries[:k]
    budgets = [0] * len(tensors)
    masks = [torch.zeros(t.numel(), dtype=torch.float32) for t in tensors]
    for _, ti, j in chosen:
        budgets[ti] += 1
        masks[ti][j] = 1
    return chosen[-1][0], budgets, [m.reshape(t.shape) for m, t in zip(masks, tensors, strict=True)]


# -- tiny offline models -----------------------------------------------------------------------
VOCAB = 40
SEQ = 6
BATCH = 3
LABELS = 3


def _mlp():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, LABELS)
    )
    return model


def make_model(family: str, seed: int = 0):
    """A tiny randomly initialised model of ``family`` (eval mode) and its class."""
    import transformers as tf

    torch.manual_seed(seed)
    if family == "mlp":
        model = _mlp()
    elif family == "bert":
        model = tf.BertForSequenceClassification(
            tf.BertConfig(
                vocab_size=VOCAB,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=16,
                num_labels=LABELS,
            )
        )
    elif family == "distilbert":
        model = tf.DistilBertForSequenceClassification(
            tf.DistilBertConfig(
                vocab_size=VOCAB,
                dim=16,
                n_layers=2,
                n_heads=2,
                hidden_dim=32,
                max_position_embeddings=16,
                num_labels=LABELS,
            )
        )
    elif family == "roberta":
        model = tf.RobertaForSequenceClassification(
            tf.RobertaConfig(
                vocab_size=VOCAB,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=16,
                num_labels=LABELS,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
            )
        )
    elif family == "gpt2":
        model = tf.GPT2LMHeadModel(
            tf.GPT2Config(
                vocab_size=VOCAB,
                n_embd=16,
                n_layer=2,
                n_inner=32,
                n_head=2,
                n_positions=16,
                bos_token_id=0,
                eos_token_id=0,
                pad_token_id=0,
            )
        )
    else:
        raise KeyError(family)
    model.eval()
    return model


FAMILIES = ("mlp", "bert", "distilbert", "roberta", "gpt2")
MLP_TARGETS = ("0", "2")  # the two hidden Linear layers; "4" is the head


def make_batch(family: str, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    if family == "mlp":
        return {
            "x": torch.randn(BATCH, 8, generator=g),
            "labels": torch.randint(0, LABELS, (BATCH,), generator=g),
        }
    ids = torch.randint(3, VOCAB, (BATCH, SEQ), generator=g)
    if family == "gpt2":
        return {"input_ids": ids, "labels": ids}
    return {"input_ids": ids, "labels": torch.randint(0, LABELS, (BATCH,), generator=g)}


def outputs(model, batch: dict) -> torch.Tensor:
    """Logits of ``model`` on ``batch`` (no labels, no grad)."""
    with torch.no_grad():
        if "x" in batch:
            return model(batch["x"])
        return model(input_ids=batch["input_ids"]).logits


def loss_of(model, batch: dict) -> torch.Tensor:
    if "x" in batch:
        return nn.functional.cross_entropy(model(batch["x"]), batch["labels"])
    return model(**batch).loss
