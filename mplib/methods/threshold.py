"""Hard threshold on learned scores: ``M = 1[S > tau]`` with a fixed ``tau``.

In formulas::

    forward:   M = 1[S > tau]
    backward:  dL/dS = (dL/dW') ⊙ W            (straight-through, as for movement)

The mask's size is not set by anyone: it is wherever the scores end up relative to ``tau``
(default 0), so the achieved sparsity must be measured, not assumed. This is the form the paper
prints for soft movement (Table 1, with ``S`` instead of ``sigmoid(S)``); kept as a method of its
own to show why a penalty is needed to reach a target.

Taught in: book/02_straight_through.ipynb (straight-through estimators).
"""

from __future__ import annotations

import torch

from ..ste import threshold_ste
from .base import Curve, PruningMethod


class Threshold(PruningMethod):
    """``M = 1[S > tau]`` with the straight-through gradient to ``S``."""

    name = "threshold"
    knobs = ("tau",)
    scores = "parameter"
    default_tau = 0.0
    chapter = "book/02_straight_through.ipynb"

    def forward_mask(self, layer) -> torch.Tensor:
        return threshold_ste(layer.scores, layer.tau)

    def mask(self, layer) -> torch.Tensor:
        with torch.no_grad():
            return (layer.scores > layer.tau).to(layer.weight.dtype)

    def scheduled(self, curve: Curve) -> dict:
        return {"tau": self.config.tau}

    def state_repr(self, layer) -> str:
        return f"tau={layer.tau}"
