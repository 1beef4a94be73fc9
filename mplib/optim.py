"""Optimizer parameter groups: scores get their own learning rate and no weight decay.

The authors trained ``S`` with AdamW at 1e-2 (1e-1 for L0), about 300x the weights' rate, and
without weight decay, which would otherwise pull every score towards 0 and undo the ranking.
Biases and LayerNorm weights get no weight decay either (the usual BERT recipe).

Taught in: the training chapter.
"""

from __future__ import annotations

from torch import nn


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    score_lr: float = 1e-2,
    weight_decay: float = 0.0,
    freeze_embeddings: bool = False,
) -> list[dict]:
    """Three groups for ``torch.optim.AdamW``: decayed weights, undecayed (bias/LayerNorm), scores.

    ``freeze_embeddings=True`` sets ``requires_grad=False`` on embedding parameters, as the
    paper does (§5). Empty groups are dropped.
    """
    if freeze_embeddings:
        for name, p in model.named_parameters():
            if "embeddings" in name.split(".") or name.split(".")[-2:-1] in (["wte"], ["wpe"]):
                p.requires_grad_(False)
    decay, no_decay, scores = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("scores"):
            scores.append(p)
        elif p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": "no_decay"},
        {"params": scores, "lr": score_lr, "weight_decay": 0.0, "name": "scores"},
    ]
    return [g for g in groups if g["params"]]
