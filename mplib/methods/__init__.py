"""Every pruning method, one module each, behind one contract (:class:`PruningMethod`).

=======================  ===============================  ===================================
method                   mask ``M`` (training forward)    what reaches the scores ``S``
=======================  ===============================  ===================================
magnitude                Top_v(``|W|``)                   nothing (no scores)
movement                 Top_v(``S``)                     straight-through ``(dL/dW') ⊙ W``
soft_movement            ``1[sigmoid(S) > tau_t]``        straight-through, + L1 penalty
l0                       hard-concrete sample             reparametrised gradient, + E[L0]
threshold                ``1[S > tau]``                   straight-through
random                   Top_v(fixed random ``S``)        nothing (a buffer)
accumulated_movement     Top_v(``S``)                     ``S -= W ⊙ grad_W`` after backward
snip                     Top_v(``S``)                     ``S += |W ⊙ grad_W|`` after backward
block_movement           ``E(Top_v(S))``, S per block     straight-through, summed per block
neuron_movement          ``E(Top_v(S))``, S per row/col   straight-through, summed per row/col
head_movement            ``E(Top_v(S))``, S per head      straight-through, summed per head
=======================  ===============================  ===================================

``E`` copies one score per group (block, row/column, head) to the group's weights
(:mod:`~mplib.methods.coarse`).

Adding a method: one module here with a :class:`PruningMethod` subclass, one line in
:data:`METHODS`, one row in the method table of ``tests/test_methods.py``.

Taught in: book/01_masks_and_magnitude.ipynb (the table); each module names its chapter.
"""

from __future__ import annotations

from .accumulated_movement import AccumulatedMovement
from .base import AccumulatedTopV, PruningMethod, TopV
from .block_movement import BlockMovement
from .head_movement import HeadMovement
from .l0 import L0
from .magnitude import Magnitude
from .movement import Movement
from .neuron_movement import NeuronMovement
from .random import Random
from .snip import Snip
from .soft_movement import SoftMovement
from .threshold import Threshold

METHODS: dict[str, type[PruningMethod]] = {
    cls.name: cls
    for cls in (Magnitude, Movement, SoftMovement, L0, Threshold, Random, AccumulatedMovement,
                Snip, BlockMovement, NeuronMovement, HeadMovement)
}
"""Every registered method, by name.

``METHODS["movement"]`` is :class:`~mplib.methods.movement.Movement`.
"""


def get_method(name: str) -> type[PruningMethod]:
    """The class registered as ``name`` (a clear error listing the known names otherwise)."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown pruning method {name!r}; choose one of {sorted(METHODS)}") \
            from None


__all__ = ["METHODS", "AccumulatedTopV", "PruningMethod", "TopV", "get_method"]
