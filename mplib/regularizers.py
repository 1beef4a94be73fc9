"""Sparsity penalties on the scores (paper Table 1, §4), mean-normalised as in the authors' code.

* Soft movement: ``R(S) = mean over matrices of mean_ij sigmoid(S_ij)``. The paper writes the
  plain sum ``sum_ij sigmoid(S_ij)``; the code divides each matrix by its size and averages the
  matrices, so the published lambdas (1 ... 2300) live on this scale.
* L0: ``E[L0] = mean over matrices of mean_ij sigmoid(S_ij - b log(-l/r))``, the probability
  that a hard-concrete gate is non-zero (see :mod:`mplib.hard_concrete`).

The training loss is ``L + lam_t * R``.

Taught in: the soft-movement and L0 chapters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .hard_concrete import BETA, LEFT, RIGHT, prob_nonzero


def _mean_of_means(values: Sequence[torch.Tensor]) -> torch.Tensor:
    if not values:
        raise ValueError("no score tensors given: wrap the model with a scored method first")
    return torch.stack([v.mean() for v in values]).mean()


def l1_sigmoid(scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """``mean_m mean_ij sigmoid(S^m_ij)`` (soft movement's penalty, authors' normalisation)."""
    return _mean_of_means([torch.sigmoid(s) for s in scores])


def expected_l0(
    scores: Sequence[torch.Tensor], *, left: float = LEFT, right: float = RIGHT, beta: float = BETA
) -> torch.Tensor:
    """``mean_m mean_ij P(gate^m_ij > 0)``, the mean-normalised expected L0 norm."""
    return _mean_of_means([prob_nonzero(s, left=left, right=right, beta=beta) for s in scores])
