"""SNIP-style saliency accumulated over fine-tuning (Lee et al. 2019), a contrast score.

In formulas::

    after every backward:   S <- S + |W ⊙ grad_W|,     grad_W = (dL/dW') ⊙ M
    mask:                   M = Top_v(S)

The first-order estimate of how much the loss changes when a weight is removed, summed over
steps. Unlike movement it ignores the *direction* of the change: a weight that moves towards
zero scores as high as one that moves away.

The update is not linear in the gradient, so averaging per-process scores under DDP would
compute another saliency than one process does: refused (``ddp = "refuse"``).

Taught in: book/04_movement_scores.ipynb (a contrast score).
"""

from __future__ import annotations

import torch

from .base import AccumulatedTopV


class Snip(AccumulatedTopV):
    """``S += |W ⊙ grad_W|`` after each backward, ``M = Top_v(S)``."""

    name = "snip"
    ddp = "refuse"
    chapter = "book/04_movement_scores.ipynb"

    def accumulate(self, layer, grad_weight: torch.Tensor) -> None:
        layer.scores.add_((grad_weight * layer.weight).abs())
