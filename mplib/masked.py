"""The masked layer: ``a = (W ⊙ M) x + b`` with ``M`` computed from scores (paper §3, §4).

:class:`MaskedLinear` *wraps* an ``nn.Linear`` or a GPT-2 ``Conv1D`` by composition: it holds the
very same ``weight`` and ``bias`` Parameters (shared, not copied), adds a score matrix ``S`` of
the weight's shape when the method has one, and asks its method (:mod:`mplib.methods`, one
module per rule) for the mask:

* training forward: ``W' = W ⊙ method.forward_mask(layer)`` -- the method's straight-through
  or reparametrised gradient reaches ``S`` through it;
* evaluation, export, reports: ``method.mask(layer)``, always binary;
* methods that accumulate ``S`` from the weight's gradient (accumulated_movement, snip) get
  ``grad_W = (dL/dW') ⊙ M`` after each backward through a hook on ``W'``.

The layer holds the state the schedule changes: ``keep_ratio``, ``tau`` and, for global
selection, ``budget``. The bias is never masked. Shapes: ``weight`` is ``(out, in)`` for Linear
and ``(in, out)`` for Conv1D; the mask always has the weight's shape, and so has ``scores``
except for the structured methods, whose ``scores`` hold one entry per block, neuron or head
(:mod:`mplib.methods.coarse`).

Taught in: book/01_masks_and_magnitude.ipynb, book/02_straight_through.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import PruningConfig


def conv1d_class():
    """transformers' GPT-2 ``Conv1D`` class, or None if transformers is not installed."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None
    return Conv1D


def is_supported(module: nn.Module) -> bool:
    """True for the layer types mplib can wrap: ``nn.Linear`` and GPT-2 ``Conv1D``."""
    conv1d = conv1d_class()
    return isinstance(module, nn.Linear) or (conv1d is not None and isinstance(module, conv1d))


class MaskedLinear(nn.Module):
    """A Linear (or Conv1D) layer whose weight is multiplied by a mask on every forward pass.

    Attributes:
        weight: the wrapped layer's own Parameter (shared).
        bias: the wrapped layer's bias Parameter or None (shared, never masked).
        scores: learned ``nn.Parameter`` (movement, soft_movement, l0, threshold), a buffer
            (random, accumulated_movement, snip) or None (magnitude).
        keep_ratio: the kept fraction currently applied by Top_v methods (set by the schedule).
        tau: the threshold currently applied (soft_movement, threshold).
        budget: for global selection, the exact number of entries this matrix keeps
            (overrides ``keep_ratio``); None for local selection.
    """

    def __init__(self, base: nn.Module, config: PruningConfig, name: str = ""):
        super().__init__()
        if not is_supported(base):
            raise TypeError(
                f"cannot wrap {name or 'module'} of type {type(base).__name__}: mplib masks "
                "nn.Linear and transformers' Conv1D only. Exclude it with exclude_modules"
            )
        self.name = name
        self.base_class = type(base)
        self.transposed = not isinstance(base, nn.Linear)  # Conv1D stores (in, out)
        self.weight = base.weight
        self.bias = base.bias
        self.method = config.method
        self.rule = config.method_class(config)
        self.keep_ratio = config.keep_ratio
        self.tau = config.tau
        self.budget: int | None = None

        scores = self.rule.initial_scores(self.weight, name)
        if scores is None:
            self.scores = None
        elif self.rule.scores == "parameter":
            self.scores = nn.Parameter(scores)
        else:
            self.register_buffer("scores", scores)

    @property
    def in_features(self) -> int:
        return self.weight.shape[0] if self.transposed else self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1] if self.transposed else self.weight.shape[0]

    def kept_count(self) -> int:
        """Entries a Top_v method keeps now: the global budget or ``ceil(keep_ratio * N)``."""
        return self.rule.kept_count(self)

    def ranking_scores(self) -> torch.Tensor:
        """What a Top_v method ranks: ``|W|`` for magnitude, ``S`` otherwise (detached)."""
        return self.rule.ranking(self)

    # -- masks ---------------------------------------------------------------------------------
    def forward_mask(self) -> torch.Tensor:
        """The mask used by this forward pass (carries the method's gradient to ``S``)."""
        return self.rule.forward_mask(self)

    def mask(self) -> torch.Tensor:
        """The current binary mask (no gradient): what ``bake`` applies and reports count."""
        with torch.no_grad():
            return self.rule.mask(self)

    def masked_weight(self) -> torch.Tensor:
        """``W' = W ⊙ M`` as used by the forward pass (the graph to ``W`` and ``S`` included)."""
        w = self.weight * self.forward_mask()
        if self.rule.accumulates and self.training and torch.is_grad_enabled() \
                and w.requires_grad:
            w.register_hook(self._accumulate)
        return w

    def _accumulate(self, grad_masked_weight: torch.Tensor) -> None:
        # grad_W = (dL/dW') ⊙ M: the weight's own gradient, zero where pruned (no re-entry).
        with torch.no_grad():
            self.rule.accumulate(self, grad_masked_weight * self.mask())

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.masked_weight()
        if self.transposed:  # the exact computation of transformers' Conv1D
            out = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), w)
            return out.view(x.size()[:-1] + (w.size(-1),))
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        kind = "Conv1D" if self.transposed else "Linear"
        return (
            f"{kind}(in={self.in_features}, out={self.out_features}, "
            f"bias={self.bias is not None}), method={self.method}, {self.rule.state_repr(self)}"
        )
