"""How much is left: remaining fractions per matrix, per layer, per group and overall.

The paper's "remaining weights" (§5) is the fraction of the *targeted encoder weights* that
survive: ``sum_m |M_m|_0 / sum_m N_m`` over the wrapped matrices -- biases, LayerNorm,
embeddings and head are not in it. For all-MiniLM-L6-v2 the targeted weights are 10.62 M of
22.71 M parameters, so "10 % remaining" leaves about 58 % of all parameters: both are reported.

Taught in: book/01_masks_and_magnitude.ipynb.
"""

from __future__ import annotations

import re
from collections import defaultdict

from torch import nn

from .surgery import masked_layers

_GROUPS = (
    (r"(query|q_lin)$", "query"),
    (r"(key|k_lin)$", "key"),
    (r"(value|v_lin)$", "value"),
    (r"c_attn$", "qkv"),
    (r"(attention\.output\.dense|out_lin|attn\.c_proj)$", "attention_output"),
    (r"(intermediate\.dense|lin1|c_fc)$", "ffn_in"),
    (r"(output\.dense|lin2|mlp\.c_proj)$", "ffn_out"),
)


def group_of(name: str) -> str:
    """The role of a matrix, from its module name (query, ..., ffn_out; else its last part)."""
    for pattern, group in _GROUPS:
        if re.search(pattern, name):
            return group
    return name.rsplit(".", 1)[-1]


def layer_of(name: str) -> int | None:
    """Transformer block index from a module name like ``encoder.layer.3.output.dense``."""
    found = re.search(r"\.(\d+)\.", "." + name + ".")
    return int(found.group(1)) if found else None


def matrix_report(model: nn.Module) -> list[dict]:
    """One row per wrapped matrix: name, layer, group, numel, kept, remaining."""
    rows = []
    for name, layer in masked_layers(model).items():
        kept = int(layer.mask().sum())
        n = layer.weight.numel()
        rows.append(dict(name=name, layer=layer_of(name), group=group_of(name), numel=n,
                         kept=kept, remaining=kept / n))
    return rows


def remaining_fraction(model: nn.Module) -> float:
    """Fraction of the targeted (wrapped) weights whose mask is 1 -- the paper's definition."""
    rows = matrix_report(model)
    if not rows:
        raise ValueError("model has no mplib masked layers; call mplib.wrap(model, config) first")
    return sum(r["kept"] for r in rows) / sum(r["numel"] for r in rows)


def sparsity_report(model: nn.Module) -> dict:
    """Remaining fractions: ``global``, ``per_layer``, ``per_group``, ``per_matrix`` and counts.

    ``of_all_parameters`` is the fraction of *all* model parameters that are not pruned.
    """
    rows = matrix_report(model)
    if not rows:
        raise ValueError("model has no mplib masked layers; call mplib.wrap(model, config) first")

    def fold(key):
        kept, total = defaultdict(int), defaultdict(int)
        for r in rows:
            kept[r[key]] += r["kept"]
            total[r[key]] += r["numel"]
        return {k: kept[k] / total[k] for k in total}

    targeted = sum(r["numel"] for r in rows)
    kept = sum(r["kept"] for r in rows)
    score_ids = {id(layer.scores) for layer in masked_layers(model).values()}
    all_params = sum(p.numel() for p in model.parameters() if id(p) not in score_ids)
    return {
        "global": kept / targeted,
        "per_layer": fold("layer"),
        "per_group": fold("group"),
        "per_matrix": {r["name"]: r["remaining"] for r in rows},
        "targeted_weights": targeted,
        "kept_weights": kept,
        "all_parameters": all_params,
        "of_all_parameters": (all_params - (targeted - kept)) / all_params,
    }

