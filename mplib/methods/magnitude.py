"""Magnitude pruning (the paper's baseline, §3): keep the largest ``|W|`` of each matrix.

In formulas::

    M = Top_v(|W|)            (no scores; the mask follows the weights as they train)

Zeroth-order: the decision uses only the weights' current values, never how they change. During
fine-pruning ``v`` follows the cubic schedule, so weights that shrink below the moving threshold
are dropped (the "gradual magnitude pruning" of Zhu & Gupta 2018). No gradient reaches a mask.

Taught in: book/01_masks_and_magnitude.ipynb.
"""

from __future__ import annotations

import torch

from .base import TopV


class Magnitude(TopV):
    """``M = Top_v(|W|)``."""

    name = "magnitude"
    scores = "none"
    chapter = "book/01_masks_and_magnitude.ipynb"

    def ranking_source(self, layer) -> tuple[torch.Tensor, bool]:
        return layer.weight, True
