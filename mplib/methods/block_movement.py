"""Block movement pruning (Lagunas et al. 2021): one learned score per ``r x c`` block of weights.

In formulas (``E`` copies a block's value to its ``r x c`` weights, :mod:`~mplib.methods.coarse`)::

    forward:   M = E(Top_v(S)),  S of shape (R / r, C / c),  W' = W ⊙ M
    backward:  dL/dS_block = sum over the block of (dL/dW') ⊙ W

``block_size`` (default 32, or a pair ``(r, c)`` of the *stored* weight's rows and columns) must
divide every selected weight's shape; Lagunas et al. used square blocks such as 32 x 32 on the
attention matrices. They learned ``S`` with a sigmoid threshold and an L1 penalty (soft movement);
here ``S`` goes through the same Top_v as :mod:`~mplib.methods.movement`, so exactly
``ceil(v G)`` of the ``G`` blocks of each matrix are kept. A dense matrix with zero blocks is
not faster on its own: the speed comes when whole heads or neurons end up empty and are removed
(:mod:`mplib.shrink`; measured by ``bench/bench_structured_speed.py``).

Taught in: book/13_deploying.ipynb.
"""

from __future__ import annotations

from .coarse import CoarseTopV

DEFAULT_BLOCK = 32


class BlockMovement(CoarseTopV):
    """``M = E(Top_v(S))`` over ``block_size`` blocks, straight-through to the block scores."""

    name = "block_movement"
    options = ("block_size",)
    chapter = "book/13_deploying.ipynb"

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        size = DEFAULT_BLOCK if config.block_size is None else config.block_size
        pair = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        if len(pair) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                     for x in pair):
            raise ValueError(
                f"block_size must be a positive int or a pair (rows, cols) of them, got "
                f"{config.block_size!r}; e.g. block_size=32 or block_size=(32, 32)"
            )
        config.block_size = pair

    def group_for(self, shape, name):
        return self.config.block_size

    def stored_group(self, weight, name):  # block_size is given in the stored orientation
        return self.config.block_size

    def divisibility_message(self, name, shape, group) -> str:
        rows, cols = shape
        fits = [b for b in (64, 32, 16, 8, 4, 2, 1) if rows % b == 0 and cols % b == 0]
        return (f"block_movement: the weight of {name or 'the layer'!r} has shape {shape}, "
                f"which block_size={group} does not divide. Pass a block_size that divides "
                f"every selected weight (e.g. block_size={fits[0]} for this one), or leave this "
                "layer out with exclude_modules")
