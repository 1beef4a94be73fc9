"""Evaluation: accuracy and mean cross-entropy of a model on a loader, masks as they are now.

Used by the training loop, the runner, the probes and the chapters (which call it rather than
writing their own loop).

Taught in: book/03_fine_pruning.ipynb.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["evaluate", "model_inputs", "to_device"]


def to_device(batch: dict, device) -> dict:
    """The batch with every tensor on ``device``."""
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def model_inputs(batch: dict) -> dict:
    """The batch without its labels: what the model's forward takes."""
    return {k: v for k, v in batch.items() if k not in ("labels", "label")}


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, device=None, max_batches: int | None = None) -> dict:
    """Accuracy and mean cross-entropy of ``model`` on ``loader`` (eval mode, masks as now).

    Returns ``dict(accuracy=..., loss=..., examples=...)``; the model's train/eval mode is restored.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = to_device(batch, device)
        logits = model(**model_inputs(batch)).logits
        labels = batch["labels"]
        loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
        total += labels.numel()
    model.train(was_training)
    return dict(accuracy=correct / max(total, 1), loss=loss_sum / max(total, 1), examples=total)
