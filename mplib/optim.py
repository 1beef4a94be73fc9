"""The optimizer of fine-pruning: AdamW with scores in their own group, and its LR schedule.

The authors trained ``S`` with AdamW at 1e-2 (1e-1 for L0), about 300x the weights' rate, and
without weight decay, which would otherwise pull every score towards 0 and undo the ranking.
Biases and LayerNorm weights get no weight decay either (the usual BERT recipe). Every group's
rate follows the same factor: linear warm-up over ``warmup_steps``, then linear decay to 0 at
``total_steps``:

    lr_t = lr * min((t + 1) / warmup_steps, (T - t) / (T - warmup_steps))

:func:`make_optimizer` is used by both mplib's plain loop and the ``Trainer`` adapter.

Taught in: book/03_fine_pruning.ipynb (the loop).
"""

from __future__ import annotations

import torch
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


def linear_warmup_decay(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: ``(t+1)/warmup`` while warming up, then linear decay to 0 at ``T``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def make_optimizer(model: nn.Module, *, lr: float, total_steps: int, warmup_steps: int = 0,
                   score_lr: float = 1e-2, weight_decay: float = 0.0,
                   freeze_embeddings: bool = False):
    """``(AdamW, LambdaLR)`` over :func:`mplib.optim.param_groups`, with
    :func:`mplib.optim.linear_warmup_decay`.

    Pass the model itself or any wrapper of it: groups are chosen by parameter names.
    """
    groups = param_groups(model, lr=lr, score_lr=score_lr, weight_decay=weight_decay,
                          freeze_embeddings=freeze_embeddings)
    opt = torch.optim.AdamW(groups, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: linear_warmup_decay(t, warmup_steps=warmup_steps, total_steps=total_steps))
    return opt, sched
