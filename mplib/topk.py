"""Top_v: keep exactly the k = ceil(v*N) highest scores of a matrix (paper Eq. 1).

``Top_v(S)_ij = 1`` if ``S_ij`` is among the ``k`` largest entries of ``S``, else 0, with

    k = keep_count(N, v) = ceil(v * N)          (v = keep_ratio, the fraction KEPT)

computed so that float noise cannot add an entry (``ceil(0.1 * 100)`` is 10, not 11). Since
``v > 0`` this keeps at least one weight without any hidden floor.

Ties are broken deterministically: among equal scores the one with the lower flat (row-major)
index is kept. (The authors' code sorted with ``torch.sort``, whose order among ties is not
specified.) The k-th largest value is found with ``kthvalue`` (selection, O(N)), not a full sort.

Taught in: book/01_masks_and_magnitude.ipynb.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

_FLOAT_NOISE = Fraction(1, 2**48)


def keep_count(numel: int, keep_ratio: float) -> int:
    """Number of entries Top_v keeps: ``ceil(keep_ratio * numel)``, robust to float noise.

    >>> keep_count(100, 0.1), keep_count(10, 0.25), keep_count(7, 1.0)
    (10, 3, 7)
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    # Exact rational product, less a relative 2^-48 (~16 ulps) of float noise: 0.1 is stored as
    # 0.1000000000000000055..., yet 0.999999 * 999999 = 999998.000001 must still round up.
    exact = Fraction(float(keep_ratio)) * numel
    k = math.ceil(exact - exact * _FLOAT_NOISE)
    return min(numel, max(k, 1))


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Binary mask (same shape and dtype as ``scores``) with ones at the ``k`` largest scores.

    Ties at the k-th value go to the lowest flat indices. Cost: one ``kthvalue`` and a few
    element-wise passes; no gradient is tracked.

    Args:
        scores: any shape, floating point, no NaN.
        k: number of entries to keep, ``0 <= k <= scores.numel()``.
    """
    n = scores.numel()
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, {n}], got {k}")
    with torch.no_grad():
        flat = scores.detach().reshape(-1)
        if k == n:
            return torch.ones_like(scores)
        if k == 0:
            return torch.zeros_like(scores)
        if torch.isnan(flat).any():
            raise ValueError(
                "scores contain NaN, so Top_v is undefined; check the score learning rate "
                "(too large?) and the loss for NaN/inf"
            )
        # k-th largest = (n - k + 1)-th smallest
        kth = torch.kthvalue(flat, n - k + 1).values
        keep = flat > kth
        missing = k - int(keep.sum())
        if missing > 0:
            tie = flat == kth
            keep |= tie & (torch.cumsum(tie, 0) <= missing)
        return keep.reshape(scores.shape).to(scores.dtype)
