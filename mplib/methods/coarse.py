"""Coarse scores: one score per group of weights (a block, a neuron, a head), Top_v over groups.

The structured methods (:mod:`~mplib.methods.block_movement`,
:mod:`~mplib.methods.neuron_movement`, :mod:`~mplib.methods.head_movement`) all cut a stored
weight of shape ``(R, C)`` into a grid of ``G = (R / r) x (C / c)`` equal groups of shape
``(r, c)`` and learn one score per group, ``S`` of shape ``(R / r, C / c)``. In formulas
(Lagunas et al. 2021, block movement pruning; ``E`` copies each group's value to its ``r x c``
weights, ``repeat_interleave`` along both axes)::

    forward:   M = E(Top_v(S)),   W' = W ⊙ M        (exactly ceil(v G) groups kept)
    backward:  dL/dS_g = sum_{(i,j) in group g} (dL/dW')_ij W_ij

The backward rule is the element-wise straight-through rule of :mod:`mplib.ste` followed by the
adjoint of ``E`` (a sum over each group): autograd derives it from ``topk_ste`` on the coarse
``S`` and the expansion, no new ``autograd.Function``. With ``r = c = 1`` it is plain movement
pruning.

Which axis a method groups depends on the layer's *role*, read from its name (``role``):

* ``attn_in``  -- query, key, value (BERT ``attention.self.query``, DistilBERT ``q_lin``, GPT-2's
  fused ``attn.c_attn``): outputs are head dimensions, so a head is a band of rows;
* ``attn_out`` -- the attention output (``attention.output.dense``, ``out_lin``, ``attn.c_proj``):
  inputs are head dimensions, so a head is a band of columns;
* ``ffn_out``  -- the second FFN matrix (BERT ``output.dense``, ``lin2``, ``mlp.c_proj``): an
  intermediate neuron is one column;
* ``rows``     -- everything else (the first FFN matrix, an MLP's Linear): a neuron is one row.

Group shapes are given in the ``(out, in)`` orientation of ``nn.Linear``; GPT-2's ``Conv1D``
(stored ``(in, out)``), recognised by its module names, gets the transposed groups.
Only local selection (Top_v inside each matrix) is supported: groups of different matrices
have different sizes, so one global Top_v over them would not count weights.

Taught in: book/13_deploying.ipynb.
"""

from __future__ import annotations

import re
from typing import ClassVar

import torch

from ..ste import topk_ste
from ..topk import keep_count, topk_mask
from .base import TopV

_ROLES = (
    ("attn_in", r"(^|\.)(attention\.self\.(query|key|value)|attention\.(q_lin|k_lin|v_lin)"
                r"|attn\.c_attn)$"),
    ("attn_out", r"(^|\.)(attention\.output\.dense|attention\.out_lin|attn\.c_proj)$"),
    ("ffn_out", r"(^|\.)(output\.dense|ffn\.lin2|mlp\.c_proj)$"),
)
_CONV1D_NAMES = re.compile(r"(^|\.)(attn\.(c_attn|c_proj)|mlp\.(c_fc|c_proj))$")


def role(name: str) -> str:
    """``"attn_in"``, ``"attn_out"``, ``"ffn_out"`` or ``"rows"`` for a module name."""
    for kind, pattern in _ROLES:
        if re.search(pattern, name):
            return kind
    return "rows"


def expand(grid: torch.Tensor, group: tuple[int, int]) -> torch.Tensor:
    """``E``: each entry of ``grid`` (``(g0, g1)``) copied to a ``group`` block -> ``(g0 r, g1 c)``.

    Differentiable; its backward sums the incoming gradient over each block.
    """
    r, c = group
    g0, g1 = grid.shape
    return grid[:, None, :, None].expand(g0, r, g1, c).reshape(g0 * r, g1 * c)


class CoarseTopV(TopV):
    """Top_v over one learned score per ``(r, c)`` group, expanded to the weight's shape.

    Subclasses say which group a layer uses (:meth:`group_for`, ``(out, in)`` orientation).
    """

    scores = "parameter"
    options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if config.scope != "local":
            raise ValueError(
                f"method {config.method!r} keeps whole groups per matrix and supports only "
                "scope='local' (the groups of different matrices differ in size, so a global "
                "Top_v over them would not count weights); use scope='local'"
            )

    def group_for(self, shape: tuple[int, int], name: str) -> tuple[int, int]:
        """The ``(r, c)`` group of a weight of ``(out, in)`` shape ``shape`` named ``name``."""
        raise NotImplementedError

    def stored_group(self, weight: torch.Tensor, name: str) -> tuple[int, int]:
        """The group in the weight's stored orientation (transposed for GPT-2's Conv1D)."""
        if weight.ndim != 2:
            raise ValueError(f"{self.name} groups 2-D weights; {name!r} has shape "
                             f"{tuple(weight.shape)}")
        transposed = _CONV1D_NAMES.search(name) is not None
        shape = tuple(weight.shape[::-1]) if transposed else tuple(weight.shape)
        r, c = self.group_for(shape, name)
        return (c, r) if transposed else (r, c)

    def initial_scores(self, weight: torch.Tensor, name: str) -> torch.Tensor:
        r, c = self.stored_group(weight, name)
        rows, cols = weight.shape
        if rows % r or cols % c:
            raise ValueError(self.divisibility_message(name, (rows, cols), (r, c)))
        return super().initial_scores(weight.new_empty(rows // r, cols // c), name)

    def divisibility_message(self, name, shape, group) -> str:
        return (f"{self.name}: the weight of {name or 'the layer'!r} has shape {shape}, which "
                f"does not split into groups of {group}")

    def group_of(self, layer) -> tuple[int, int]:
        """The group shape of a wrapped layer: weight shape / score grid shape."""
        (rows, cols), (g0, g1) = layer.weight.shape, layer.scores.shape
        return rows // g0, cols // g1

    def kept_count(self, layer) -> int:
        """Groups kept now: ``ceil(keep_ratio_t * G)``."""
        return keep_count(layer.scores.numel(), layer.keep_ratio)

    def forward_mask(self, layer) -> torch.Tensor:
        return expand(topk_ste(layer.scores, self.kept_count(layer)), self.group_of(layer))

    def mask(self, layer) -> torch.Tensor:
        with torch.no_grad():
            grid = topk_mask(layer.scores.detach(), self.kept_count(layer))
            return expand(grid, self.group_of(layer)).to(layer.weight.dtype)

    def state_repr(self, layer) -> str:
        r, c = self.group_of(layer)
        return f"keep_ratio={layer.keep_ratio}, groups={tuple(layer.scores.shape)} of {r}x{c}"


def neuron_group(shape: tuple[int, int], name: str) -> tuple[int, int]:
    """One output row, or one input column for layers that read neurons/heads (attn/FFN out)."""
    out, inp = shape
    return (out, 1) if role(name) in ("attn_out", "ffn_out") else (1, inp)
