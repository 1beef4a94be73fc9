"""Top_v: keep exactly the k = ceil(v*N) highest scores of a matrix (paper Eq. 1).

``Top_v(S)_ij = 1`` if ``S_ij`` is among the ``k`` largest entries of ``S``, else 0, with

    k = keep_count(N, v) = ceil(v * N)          (v = keep_ratio, the fraction KEPT)

computed so that float noise cannot add an entry (``ceil(0.1 * 100)`` is 10, not 11). Since
``v > 0`` this keeps at least one weight without any hidden floor.

Ties are broken deterministically: among equal scores the one with the lower flat (row-major)
index is kept. (The authors' code sorted with ``torch.sort``, whose order among ties is not
specified.) The k-th largest value is found by selection (O(N): ``numpy.partition`` on CPU,
``kthvalue`` elsewhere), not a full sort, and recomputed on every call (no caching).

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

    Ties at the k-th value go to the lowest flat indices. Cost: one selection of the k-th
    largest value (``_select_kth`` below) and a few element-wise passes; no gradient is tracked.

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
        kth, straddle = _select_kth(flat, k)
        if straddle is None:
            straddle = int(torch.count_nonzero(flat >= kth)) > k
        if straddle:  # ties at the k-th value straddle the cut: the lowest indices win
            tie = flat == kth
            keep = flat > kth
            missing = k - int(keep.sum())
            keep |= tie & (torch.cumsum(tie, 0) <= missing)
            return keep.reshape(scores.shape).to(scores.dtype)
        # exactly the k entries >= kth, compared straight into the mask's dtype (a bool
        # tensor converted with .to(dtype) costs ~10x more on CPU)
        return torch.ge(flat, kth, out=torch.empty_like(flat)).reshape(scores.shape)


_NAN_MESSAGE = (
    "scores contain NaN, so Top_v is undefined; check the score learning rate "
    "(too large?) and the loss for NaN/inf"
)
_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)


def _select_kth(flat: torch.Tensor, k: int) -> tuple[torch.Tensor | float, bool | None]:
    """``(t, straddle)`` for a 1-D ``flat`` and ``1 <= k < numel``: ``t`` is the k-th largest
    entry; ``straddle`` says whether an entry outside the top k equals ``t`` (None: unknown).
    Raises ValueError if ``flat`` contains NaN.

    On CPU this is an in-place ``numpy`` partition (introselect, vectorised in numpy >= 2) of a
    copy made by torch, about ten times faster than ``torch.kthvalue``, which also moves an
    int64 index array along with the values. The two maxima of the partitioned copy (below /
    from the k-th place) give the NaN check (max propagates NaN) and the tie test in one read.
    Elsewhere (GPU, bfloat16, no numpy): ``isnan().any()`` and ``torch.kthvalue``. The k-th
    largest value is unique, so both paths give the same mask.
    """
    n = flat.numel()
    if flat.device.type == "cpu" and flat.dtype in _NUMPY_DTYPES:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - numpy comes with torch/transformers
            np = None
        if np is not None:
            part = flat.clone().numpy()  # torch's allocator: cheaper here than numpy's
            part.partition(n - k)  # [entries <= t | t, entries >= t]
            below, top = part[: n - k].max(), part[n - k :].max()
            if np.isnan(below) or np.isnan(top):
                raise ValueError(_NAN_MESSAGE)
            kth = part[n - k]
            return float(kth), bool(below == kth)
    if torch.isnan(flat).any():
        raise ValueError(_NAN_MESSAGE)
    return torch.kthvalue(flat, n - k + 1).values, None  # (n - k + 1)-th smallest
