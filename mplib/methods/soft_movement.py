"""Soft movement pruning (paper §4, Table 1; authors' code form): threshold ``sigmoid(S)``.

In formulas::

    forward:   M = 1[sigmoid(S) > tau_t]
    backward:  dL/dS = (dL/dW') ⊙ W                      (straight-through; no sigmoid')
    loss:      L + lam_t * R(S),   R(S) = mean_m mean_ij sigmoid(S^m_ij)

The number of weights kept is not fixed: it is the outcome of the task loss pushing scores up
and the L1 penalty on ``sigmoid(S)`` pushing all of them down, so the target sparsity is reached
only through ``lam``. The threshold and the penalty both follow the cubic schedule:
``tau_t`` from ``initial_tau`` (0: keep all) to ``tau`` (default 0.1, i.e. ``S > -2.197``) and
``lam_t = lam * progress_t``.

Erratum (paper.md §9): the paper prints ``M = 1[S > tau]`` with a fixed ``tau`` and a *summed*
penalty; the authors' code thresholds ``sigmoid(S)`` with a scheduled ``tau`` and averages the
penalty per matrix, then over matrices. mplib implements the code's form, whose published
``lam`` values (1 ... 2300) live on this mean-normalised scale.

Taught in: book/05_soft_movement.ipynb.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..ste import sigmoid_threshold_ste
from .base import Curve, PruningMethod


def mean_of_means(values: Sequence[torch.Tensor]) -> torch.Tensor:
    """``mean_m mean_ij values^m_ij``: each matrix counts once, whatever its size."""
    if not values:
        raise ValueError("no score tensors given: wrap the model with a scored method first")
    return torch.stack([v.mean() for v in values]).mean()


def l1_sigmoid(scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """``R(S) = mean_m mean_ij sigmoid(S^m_ij)``, soft movement's penalty (authors' scale)."""
    return mean_of_means([torch.sigmoid(s) for s in scores])


class SoftMovement(PruningMethod):
    """``M = 1[sigmoid(S) > tau_t]``, straight-through, plus ``lam_t * l1_sigmoid(S)``."""

    name = "soft_movement"
    knobs = ("tau", "lam")
    scores = "parameter"
    lam_schedule = "cubic"
    chapter = "book/05_soft_movement.ipynb"
    default_tau = 0.1  # the authors' value: S > logit(0.1) = -2.197

    @classmethod
    def check_config(cls, config) -> None:
        if not 0.0 < config.tau < 1.0:
            raise ValueError(
                f"soft_movement thresholds sigmoid(S), so tau must be in (0, 1); got "
                f"{config.tau}. (tau=0.1 is the authors' value, i.e. S > -2.197)"
            )
        if not 0.0 <= config.initial_tau <= config.tau:
            raise ValueError(
                f"initial_tau must be in [0, tau]; got initial_tau={config.initial_tau}, "
                f"tau={config.tau}"
            )

    def forward_mask(self, layer) -> torch.Tensor:
        return sigmoid_threshold_ste(layer.scores, layer.tau)

    def mask(self, layer) -> torch.Tensor:
        with torch.no_grad():
            return (torch.sigmoid(layer.scores) > layer.tau).to(layer.weight.dtype)

    def scheduled(self, curve: Curve) -> dict:
        return {"tau": curve(self.config.initial_tau, self.config.tau), "lam": self.lam_at(curve)}

    def penalty(self, scores: Sequence[torch.Tensor]) -> torch.Tensor:
        return l1_sigmoid(scores)

    def state_repr(self, layer) -> str:
        return f"tau={layer.tau}"
