"""Accumulated movement without learned scores: what SparseML shipped as "movement" pruning.

In formulas::

    after every backward:   S <- S - W ⊙ grad_W,     grad_W = (dL/dW') ⊙ M
    mask:                   M = Top_v(S)

``S`` is a buffer summed from the weights' own gradients: no straight-through estimator and no
optimizer of its own, so pruned weights (``grad_W = 0``) stop accumulating and cannot come back
-- the difference from :mod:`mplib.methods.movement`, where every score keeps learning. Under
SGD with one learning rate for all, ``S`` equals movement's ``S`` up to that rate, as long as
nothing is pruned.

Under DDP the update is linear in the gradient, so averaging the per-process buffers after each
step gives exactly the one-process rule on the global batch (``ddp = "average_buffers"``).

Taught in: book/04_movement_scores.ipynb (a contrast score).
"""

from __future__ import annotations

import torch

from .base import AccumulatedTopV


class AccumulatedMovement(AccumulatedTopV):
    """``S -= W ⊙ grad_W`` after each backward, ``M = Top_v(S)``."""

    name = "accumulated_movement"
    ddp = "average_buffers"
    chapter = "book/04_movement_scores.ipynb"

    def accumulate(self, layer, grad_weight: torch.Tensor) -> None:
        layer.scores.sub_(grad_weight * layer.weight)
