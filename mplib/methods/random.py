"""Random pruning: a control with no information. Top_v of fixed uniform random scores.

In formulas::

    S ~ U(0, 1) once per matrix (seeded by ``config.seed`` and the layer's name), M = Top_v(S)

As ``v`` shrinks along the schedule the mask only loses entries (Top_v of fixed scores is
nested), like every Top_v method. Any method worth its cost must beat it.

Taught in: book/03_fine_pruning.ipynb and book/10_collapse.ipynb (the random-mask control of
the six-layer collapse).
"""

from __future__ import annotations

import zlib

import torch

from .base import TopV


class Random(TopV):
    """``M = Top_v(S)`` for fixed ``S ~ U(0, 1)`` (a buffer, no gradient)."""

    name = "random"
    scores = "buffer"
    chapter = "book/03_fine_pruning.ipynb"

    def initial_scores(self, weight: torch.Tensor, name: str) -> torch.Tensor:
        # the same scores on every process and every run of this (seed, layer name)
        seed = self.config.seed * 1_000_003 + zlib.crc32(name.encode())
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(weight.shape, generator=gen).to(dtype=weight.dtype, device=weight.device)
