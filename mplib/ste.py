"""Straight-through estimators: hard binary masks in the forward pass, identity in the backward.

A hard mask ``M = h(S)`` (Top_v, or a threshold) is piecewise constant in ``S``: its true
derivative is zero almost everywhere, so the scores would never learn. The straight-through
estimator (Bengio et al. 2013) keeps ``h`` in the forward pass and replaces ``dh/dS`` by the
identity in the backward pass (paper §4, Eq. 2). With ``W' = W ⊙ M`` autograd then gives

    dL/dS = (dL/dW') ⊙ W          (every score, kept or pruned, gets a gradient)
    dL/dW = (dL/dW') ⊙ M          (pruned weights get none)

and with plain SGD from ``S = 0``: ``S^(T) = -alpha_S * sum_t (dL/dW')^(t) ⊙ W^(t)`` (Eq. 3),
the accumulated movement of each weight away from zero.

Each rule is a ``torch.autograd.Function`` whose forward returns a new mask tensor (exactly 0/1,
no ``M + S - S.detach()`` trick, which is not exactly binary in floating point).

Taught in: book/02_straight_through.ipynb.
"""

from __future__ import annotations

import torch

from .topk import topk_mask


class TopKStraightThrough(torch.autograd.Function):
    """Forward: ``M = Top_k(S)`` (exactly k ones, ties to lower index).
    Backward: ``dL/dS = dL/dM`` (identity). Shapes: ``S`` any, ``M`` like ``S``.
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:
        return topk_mask(scores, k)

    @staticmethod
    def backward(ctx, grad_mask: torch.Tensor):
        return grad_mask, None


class ThresholdStraightThrough(torch.autograd.Function):
    """Forward: ``M = 1[S > tau]``. Backward: ``dL/dS = dL/dM`` (identity)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, tau: float) -> torch.Tensor:
        return (scores > tau).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad_mask: torch.Tensor):
        return grad_mask, None


class SigmoidThresholdStraightThrough(torch.autograd.Function):
    """Forward: ``M = 1[sigmoid(S) > tau]`` (soft movement, the authors' code form).
    Backward: ``dL/dS = dL/dM`` -- identity, *not* multiplied by ``sigmoid'(S)``.
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor, tau: float) -> torch.Tensor:
        return (torch.sigmoid(scores) > tau).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad_mask: torch.Tensor):
        return grad_mask, None


def topk_ste(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``Top_k`` mask with the straight-through gradient to ``scores``."""
    return TopKStraightThrough.apply(scores, k)


def threshold_ste(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """``1[S > tau]`` with the straight-through gradient to ``scores``."""
    return ThresholdStraightThrough.apply(scores, float(tau))


def sigmoid_threshold_ste(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """``1[sigmoid(S) > tau]`` with the straight-through gradient to ``scores``."""
    return SigmoidThresholdStraightThrough.apply(scores, float(tau))
