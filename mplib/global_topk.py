"""Global Top_v over many matrices without concatenating or sorting them (paper §7, Fig. 5-6).

Global selection keeps the ``K = ceil(v * N)`` highest scores over *all* wrapped matrices
together (N entries in total), so each matrix ends up with its own sparsity. The authors' code
concatenated every score tensor and took a ``kthvalue`` of the copy; SparseML sorted it. Both
need at least one extra copy of all scores, which ran out of memory on large models.

mplib finds the K-th largest value ``t`` exactly by a radix select on the order-preserving
integer image of the float scores (32-bit; 64-bit when any tensor is float64, so values closer
than float32 resolution stay apart), streaming over fixed-size chunks:

1. histogram of the top 16 bits (65,536 bins) over all chunks -> the bin holding ``t``;
2. histogram of the next 16 bits of the entries in that bin, and so on down to the lowest 16
   bits (two passes for 32-bit keys, four for 64-bit) -> ``t`` itself;
3. per matrix, count entries ``> t`` (``g_i``) and ``== t`` (``e_i``).

Each matrix then gets the budget ``k_i = g_i + (its share of the ties)``, ties going to earlier
matrices and, inside a matrix, to lower indices -- the same order as a stable descending sort
of the concatenation. :class:`~mplib.masked.MaskedLinear` applies its budget with the local
exact Top_k, so the union of the masks is exactly the global Top_v.

Memory: the extra peak is a few temporaries of one chunk, ``chunk = max(4096, N // 128)``
entries, about ``24 * chunk`` bytes, i.e. <= 5 % of the scores' own ``4 N`` bytes once
``N >= 524,288``, plus two 65,536-bin int64 histograms (about 1.5 MiB) whatever ``N``.
Time: three streaming passes (five for float64).

Taught in: book/08_global_selection.ipynb (C11, C12).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from .topk import keep_count

_LOW = 0xFFFF
_MASK64 = 0x7FFF_FFFF_FFFF_FFFF


def float_keys(x: torch.Tensor) -> torch.Tensor:
    """Order-preserving integer image (``a < b`` iff ``key(a) < key(b)``): int64 for float64,
    int32 for float32 and narrower floats."""
    if x.dtype == torch.float64:
        bits = (x + 0.0).view(torch.int64)  # + 0.0 turns -0.0 into +0.0
        return bits ^ ((bits >> 63) & _MASK64)
    bits = (x.to(torch.float32) + 0.0).view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def key_to_float(key: int, *, wide: bool = False) -> float:
    """Inverse of :func:`float_keys` for one key (``wide``: a float64 key)."""
    if wide:
        k = torch.tensor([key], dtype=torch.int64)
        return float((k ^ ((k >> 63) & _MASK64)).view(torch.float64).item())
    k = torch.tensor([key], dtype=torch.int32)
    return float((k ^ ((k >> 31) & 0x7FFFFFFF)).view(torch.float32).item())


def chunk_size(total: int) -> int:
    return max(4096, total // 128)


def _is_wide(tensors: Sequence[torch.Tensor]) -> bool:
    return any(t.dtype == torch.float64 for t in tensors)


def _chunks(
    tensors: Sequence[torch.Tensor], size: int, absolute: bool
) -> Iterator[tuple[int, torch.Tensor]]:
    wide = _is_wide(tensors)  # then compare everything in float64 (float32 -> float64 is exact)
    for i, t in enumerate(tensors):
        flat = t.detach().reshape(-1)
        for start in range(0, flat.numel(), size):
            part = flat[start : start + size]
            part = part.double() if wide else part
            yield i, (part.abs() if absolute else part)


def _pick_bin(hist: torch.Tensor, need: int) -> tuple[int, int]:
    """Highest bin b with count(bins >= b) >= need; returns (b, count in bins > b)."""
    above = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])  # above[b] = sum(hist[b:])
    b = int(torch.nonzero(above >= need).max())
    return b, int(above[b] - hist[b])


def kth_largest(tensors: Sequence[torch.Tensor], k: int, *, absolute: bool = False) -> float:
    """Exact k-th largest value over all entries of ``tensors`` (``abs`` first if asked)."""
    total = sum(t.numel() for t in tensors)
    if not 1 <= k <= total:
        raise ValueError(f"k must be in [1, {total}], got {k}")
    size = chunk_size(total)
    wide = _is_wide(tensors)
    top = 48 if wide else 16  # shift of the highest 16-bit digit of the key
    hist = torch.zeros(1 << 16, dtype=torch.int64)
    for _, part in _chunks(tensors, size, absolute):
        if torch.isnan(part).any():
            raise ValueError("scores contain NaN; global Top_v is undefined (check learning rates)")
        hist += torch.bincount(((float_keys(part) >> top) + 32768).long(), minlength=1 << 16)
    high, above = _pick_bin(hist, k)
    prefix = high - 32768  # the key's bits above the current digit (signed, as ``>>`` gives them)
    need = k - above
    for shift in range(top - 16, -1, -16):
        hist.zero_()
        for _, part in _chunks(tensors, size, absolute):
            keys = float_keys(part)
            digit = (keys[(keys >> (shift + 16)) == prefix] >> shift) & _LOW
            if digit.numel():
                hist += torch.bincount(digit.long(), minlength=1 << 16)
        low_bin, above = _pick_bin(hist, need)
        prefix = (prefix << 16) | low_bin
        need -= above
    return key_to_float(prefix, wide=wide)


def global_budgets(
    tensors: Sequence[torch.Tensor], keep_ratio: float, *, absolute: bool = False
) -> list[int]:
    """Per-tensor keep counts whose union is exactly the global Top_v of all entries."""
    total = sum(t.numel() for t in tensors)
    k = keep_count(total, keep_ratio)
    if k == total:
        return [t.numel() for t in tensors]
    t = kth_largest(tensors, k, absolute=absolute)
    greater = [0] * len(tensors)
    equal = [0] * len(tensors)
    for i, part in _chunks(tensors, chunk_size(total), absolute):
        greater[i] += int((part > t).sum())
        equal[i] += int((part == t).sum())
    need = k - sum(greater)
    budgets = []
    for g, e in zip(greater, equal, strict=True):
        take = min(e, need)
        budgets.append(g + take)
        need -= take
    return budgets


def assign_global_budgets(layers: Sequence, keep_ratio: float) -> list[int]:
    """Set ``layer.budget`` on every :class:`~mplib.masked.MaskedLinear` for a global Top_v."""
    sources = [layer.rule.ranking_source(layer) for layer in layers]  # (S, False) or (W, True)
    tensors = [t for t, _ in sources]
    budgets = global_budgets(tensors, keep_ratio, absolute=sources[0][1])
    for layer, b in zip(layers, budgets, strict=True):
        layer.budget = b
    return budgets
