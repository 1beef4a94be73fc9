"""The masked layer: ``a = (W ⊙ M) x + b`` with ``M`` computed from scores (paper §3, §4).

:class:`MaskedLinear` *wraps* an ``nn.Linear`` or a GPT-2 ``Conv1D`` by composition: it holds the
very same ``weight`` and ``bias`` Parameters (shared, not copied), adds a score matrix ``S`` of
the weight's shape when the method has one, and computes the mask from the method's rule:

=====================  ===============================  ========================================
method                 forward mask ``M``               gradient that reaches ``S``
=====================  ===============================  ========================================
magnitude              Top_v(``|W|``)                   none (no scores)
movement               Top_v(``S``)                     straight-through: ``(dL/dW') ⊙ W``
threshold              ``1[S > tau]``                   straight-through
soft_movement          ``1[sigmoid(S) > tau]``          straight-through
l0                     hard-concrete sample (train),    reparametrised sample (Eq. 4)
                       ``1[S > 0]`` (eval, binary)
random                 Top_v(fixed random ``S``)        none (``S`` is a buffer)
accumulated_movement   Top_v(``S``),                    none; ``S -= W ⊙ dL/dW`` after each
                       ``S -= W ⊙ grad_W`` by a hook    backward (SparseML's "movement")
snip                   Top_v(``S``),                    none; ``S += |W ⊙ dL/dW|``
                       ``S += |W ⊙ grad_W|``
=====================  ===============================  ========================================

The bias is never masked. Shapes: ``weight`` is ``(out, in)`` for Linear and ``(in, out)`` for
Conv1D; ``scores`` and the mask always have the weight's shape.

Taught in: book/01_masks_and_magnitude.ipynb, book/02_straight_through.ipynb.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F
from torch import nn

from . import hard_concrete
from .config import PruningConfig
from .ste import sigmoid_threshold_ste, threshold_ste, topk_ste
from .topk import keep_count, topk_mask

TOPV_METHODS = ("magnitude", "movement", "random", "accumulated_movement", "snip")


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
        self.l0_params = dict(left=config.l0_left, right=config.l0_right, beta=config.l0_beta)
        self.keep_ratio = config.keep_ratio
        self.tau = config.tau
        self.budget: int | None = None

        scores = self._initial_scores(config) if config.has_scores else None
        if scores is None:
            self.scores = None
        elif config.learned_scores:
            self.scores = nn.Parameter(scores)
        else:
            self.register_buffer("scores", scores)

    # -- construction -------------------------------------------------------------------------
    def _initial_scores(self, config: PruningConfig) -> torch.Tensor:
        w = self.weight
        if self.method == "random":
            seed = config.seed * 1_000_003 + zlib.crc32(self.name.encode())
            gen = torch.Generator().manual_seed(seed)
            return torch.rand(w.shape, generator=gen).to(dtype=w.dtype, device=w.device)
        if self.method in ("accumulated_movement", "snip"):
            return torch.zeros_like(w, requires_grad=False)
        s = torch.empty_like(w, requires_grad=False)
        if config.score_init == "constant":
            s.fill_(config.score_init_value)
        elif config.score_init == "uniform":
            s.uniform_(-config.score_init_value, config.score_init_value)
        else:  # kaiming, as nn.Linear initialises its weight
            nn.init.kaiming_uniform_(s, a=math.sqrt(5))
        return s

    @property
    def in_features(self) -> int:
        return self.weight.shape[0] if self.transposed else self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1] if self.transposed else self.weight.shape[0]

    def kept_count(self) -> int:
        """Entries a Top_v method keeps now: the global budget or ``ceil(keep_ratio * N)``."""
        if self.budget is not None:
            return self.budget
        return keep_count(self.weight.numel(), self.keep_ratio)

    def ranking_scores(self) -> torch.Tensor:
        """What Top_v ranks: ``|W|`` for magnitude, ``S`` otherwise (detached)."""
        if self.method == "magnitude":
            return self.weight.detach().abs()
        return self.scores.detach()

    # -- masks ---------------------------------------------------------------------------------
    def forward_mask(self) -> torch.Tensor:
        """The mask used by this forward pass (carries the method's gradient to ``S``)."""
        m = self.method
        if m == "movement":
            return topk_ste(self.scores, self.kept_count())
        if m == "soft_movement":
            return sigmoid_threshold_ste(self.scores, self.tau)
        if m == "threshold":
            return threshold_ste(self.scores, self.tau)
        if m == "l0":
            if self.training:
                return hard_concrete.sample_gates(self.scores, **self.l0_params)
            return hard_concrete.binary_gates(
                self.scores, left=self.l0_params["left"], right=self.l0_params["right"]
            )
        return topk_mask(self.ranking_scores(), self.kept_count())

    def mask(self) -> torch.Tensor:
        """The current binary mask (no gradient): what ``bake`` applies and reports count."""
        with torch.no_grad():
            if self.method == "l0":
                return hard_concrete.binary_gates(
                    self.scores, left=self.l0_params["left"], right=self.l0_params["right"]
                )
            if self.method == "soft_movement":
                return (torch.sigmoid(self.scores) > self.tau).to(self.weight.dtype)
            if self.method == "threshold":
                return (self.scores > self.tau).to(self.weight.dtype)
            return topk_mask(self.ranking_scores(), self.kept_count())

    def masked_weight(self) -> torch.Tensor:
        """``W' = W ⊙ M`` as used by the forward pass (the graph to ``W`` and ``S`` included)."""
        w = self.weight * self.forward_mask()
        if (
            self.method in ("accumulated_movement", "snip")
            and self.training
            and torch.is_grad_enabled()
            and w.requires_grad
        ):
            w.register_hook(self._accumulate)
        return w

    def _accumulate(self, grad_masked_weight: torch.Tensor) -> None:
        # grad_W = (dL/dW') ⊙ M: the weight's own gradient, zero where pruned (no re-entry).
        with torch.no_grad():
            g = grad_masked_weight * self.mask()
            if self.method == "accumulated_movement":
                self.scores.sub_(g * self.weight)
            else:
                self.scores.add_((g * self.weight).abs())

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.masked_weight()
        if self.transposed:  # the exact computation of transformers' Conv1D
            out = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), w)
            return out.view(x.size()[:-1] + (w.size(-1),))
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        state = (
            f"keep_ratio={self.keep_ratio}" if self.method in TOPV_METHODS else f"tau={self.tau}"
        )
        if self.budget is not None:
            state = f"budget={self.budget}"
        kind = "Conv1D" if self.transposed else "Linear"
        return (
            f"{kind}(in={self.in_features}, out={self.out_features}, "
            f"bias={self.bias is not None}), method={self.method}, {state}"
        )
