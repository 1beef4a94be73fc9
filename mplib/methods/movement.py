"""Movement pruning (paper §4, Eq. 1-3): keep the weights whose learned score ``S`` is highest.

In formulas::

    forward:   M = Top_v(S),   W' = W ⊙ M                        (exactly k = ceil(vN) ones)
    backward:  dL/dS = (dL/dW') ⊙ W    (straight-through: dTop_v/dS replaced by the identity)
               dL/dW = (dL/dW') ⊙ M

``S`` is an ``nn.Parameter`` trained with the weights (AdamW, its own learning rate, no weight
decay). With plain SGD from ``S = 0`` it is the accumulated movement away from zero,
``S_T = -alpha_S * sum_t (dL/dW')_t ⊙ W_t`` (Eq. 3); under Adam, what the paper ran, each
coordinate's step is normalised by the size of its own gradient, so ``S`` counts how
*consistently* ``W`` moved away from zero (about ``-sum_t alpha_t g_t / rms_{s<=t}(g_s)``).

Taught in: book/02_straight_through.ipynb; Eq. 3 under Adam and the scores-versus-weights
picture in book/04_movement_scores.ipynb.
"""

from __future__ import annotations

import torch

from ..ste import topk_ste
from .base import TopV


class Movement(TopV):
    """``M = Top_v(S)`` with the straight-through gradient to ``S``."""

    name = "movement"
    scores = "parameter"
    chapter = "book/02_straight_through.ipynb"

    def forward_mask(self, layer) -> torch.Tensor:
        return topk_ste(layer.scores, self.kept_count(layer))
