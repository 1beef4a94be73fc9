"""Neuron movement pruning: one learned score per row or per column of each matrix.

A row of the first FFN matrix and a column of the second belong to the same intermediate
neuron; when either is all zero the neuron can be removed (:mod:`mplib.shrink`). Groups
(:mod:`~mplib.methods.coarse`, ``(out, in)`` orientation)::

    attention output, FFN out (they *read* heads / neurons):   one column, group (out, 1)
    every other layer (FFN in, query, key, value, an MLP):     one row,    group (1, in)
    M = E(Top_v(S)),  dL/dS_row = sum_j (dL/dW')_ij W_ij,  dL/dS_col = sum_i (dL/dW')_ij W_ij

**Decision: one score per row and one per column, learned separately in each matrix**, not one
score shared by a neuron's row and column. The contract makes one score tensor per wrapped
matrix, as the code of Lagunas et al. 2021 (nn_pruning) does with its ``1d_alt`` masks (rows of
the first FFN matrix, columns of the second, each with its own scores); a shared score would
tie two layers.
Each matrix then keeps exactly ``ceil(v G)`` rows or columns, and the two sides of a neuron may
disagree. A neuron whose row *or* column is empty adds only a constant (``act(b_i)`` times its
column, folded into the next bias by :func:`mplib.shrink.shrink_model`), so only neurons kept on
*both* sides survive removal: at most ``ceil(v G)``, exactly that once the sides agree, and
weights kept on one side only are budget spent for nothing (measured in tests/test_shrink.py).

Taught in: book/13_deploying.ipynb.
"""

from __future__ import annotations

from .coarse import CoarseTopV, neuron_group


class NeuronMovement(CoarseTopV):
    """``M = E(Top_v(S))`` over rows (columns for attention/FFN out), straight-through."""

    name = "neuron_movement"
    chapter = "book/13_deploying.ipynb"

    def group_for(self, shape, name):
        return neuron_group(shape, name)
