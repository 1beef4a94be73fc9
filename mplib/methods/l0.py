"""L0 regularisation with hard-concrete gates (Louizos, Welling & Kingma 2018; paper §4, Eq. 4).

Each weight has a gate ``M_ij`` in [0, 1] driven by its score ``S_ij`` (Louizos' ``log alpha``).
With stretch limits ``l < 0 < 1 < r`` and temperature ``b`` (the paper: -0.1, 1.1, 2/3)::

    training:  u ~ U(0, 1)
               s = sigmoid((log u - log(1 - u) + S) / b)
               Z = (r - l) * s + l
               M = min(1, max(0, Z))                      (a sample; differentiable in S)
    expected L0 (probability that the gate is non-zero):
               P(M > 0) = sigmoid(S - b * log(-l / r))
    loss:      L + lam * mean_m mean_ij P(M^m_ij > 0)     (constant lam by default)

The paper prints ``sigmoid(log S - b log(-l/r))``; with ``S`` in the role of ``log alpha`` the
``log`` must go (the authors' code has ``S``): see paper.md §9, erratum 3.

The whole distribution of one gate (a point mass at 0, a density on (0, 1), a point mass at 1)::

    P(M <= y) = sigmoid(b * logit((y - l) / (r - l)) - S)      for 0 <= y < 1
    P(M = 0)  = sigmoid(b * log(-l / r) - S),   P(M = 1) = sigmoid(S - b * log((1 - l) / (r - 1)))

Evaluation / export. The paper's deterministic gate ``min(1, max(0, (r - l) sigmoid(S) + l))``
is *continuous*: the authors' code multiplied surviving weights by fractional gates, and counted
a weight as remaining when its gate was > 0 (``S > log(-l / r) = -2.398``). mplib's
eval and exported mask is **binary**: ``M = 1[Mhat > 1/2]``, which is ``1[S > 0]`` -- the gate is
kept exactly when its noise-free value rounds to 1, equivalently when the median of its
training distribution exceeds 1/2. :func:`deterministic_gates` still gives the continuous value,
and inside :func:`continuous_eval` a model's evaluation forward passes use it, so the book can
compare the two. Scores start at ``logit(0.9) = 2.197`` (gates about 90 % open, the authors'
recipe).

Taught in: book/06_l0_regularisation.ipynb.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .base import PruningMethod
from .soft_movement import mean_of_means

LEFT = -0.1
RIGHT = 1.1
BETA = 2.0 / 3.0
U_EPS = 1e-6  # u is clamped to [eps, 1 - eps] so log u and log(1 - u) stay finite
L0_INIT = math.log(0.9 / 0.1)  # logit(0.9) = 2.197: gates start about 90 % open


def sample_gates(
    scores: torch.Tensor,
    *,
    left: float = LEFT,
    right: float = RIGHT,
    beta: float = BETA,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One hard-concrete sample per score, differentiable w.r.t. ``scores`` (reparametrised).

    Gradient (paper Eq. 4): ``dM/dS = (r - l)/b * s * (1 - s) * 1[0 <= Z <= 1]``.
    """
    u = torch.rand(scores.shape, generator=generator, dtype=scores.dtype, device=scores.device)
    u = u.clamp(U_EPS, 1.0 - U_EPS)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + scores) / beta)
    return ((right - left) * s + left).clamp(0.0, 1.0)


def deterministic_gates(
    scores: torch.Tensor, *, left: float = LEFT, right: float = RIGHT
) -> torch.Tensor:
    """Louizos' continuous test-time gate ``min(1, max(0, (r - l) sigmoid(S) + l))``."""
    return ((right - left) * torch.sigmoid(scores) + left).clamp(0.0, 1.0)


def binary_gates(scores: torch.Tensor, *, left: float = LEFT, right: float = RIGHT) -> torch.Tensor:
    """mplib's eval/export mask: ``1[deterministic gate > 1/2]`` (= ``1[S > 0]`` for l=-r+1)."""
    # sigmoid(S) > (1/2 - l)/(r - l). The cut is exactly 0 when l + r = 1; computed in floats it
    # is not (1.1 - 0.5 = 0.6000000000000001 gives -2.2e-16, which kept S = 0), so pin it.
    if math.isclose(left + right, 1.0, rel_tol=0.0, abs_tol=1e-12):
        cut = 0.0
    else:
        cut = math.log((0.5 - left) / (right - 0.5))
    return (scores.detach() > cut).to(scores.dtype)


def prob_nonzero(
    scores: torch.Tensor, *, left: float = LEFT, right: float = RIGHT, beta: float = BETA
) -> torch.Tensor:
    """Closed-form ``P(gate > 0) = sigmoid(S - b log(-l / r))``; summed it is the expected L0."""
    return torch.sigmoid(scores - beta * math.log(-left / right))


def prob_one(
    scores: torch.Tensor, *, left: float = LEFT, right: float = RIGHT, beta: float = BETA
) -> torch.Tensor:
    """Closed-form ``P(gate = 1) = sigmoid(S - b log((1 - l) / (r - 1)))`` (the clamp at 1)."""
    return torch.sigmoid(scores - beta * math.log((1.0 - left) / (right - 1.0)))


def gate_cdf(
    y: float | torch.Tensor,
    scores: torch.Tensor,
    *,
    left: float = LEFT,
    right: float = RIGHT,
    beta: float = BETA,
) -> torch.Tensor:
    """``P(gate <= y)`` for ``y`` in [0, 1], broadcast against ``scores``.

    ``sigmoid(b * logit((y - l) / (r - l)) - S)`` for ``0 <= y < 1`` (at ``y = 0`` this is
    ``P(gate = 0)``), and 1 at ``y = 1``: the jump at 1 is ``P(gate = 1)``.
    """
    y = torch.as_tensor(y, dtype=scores.dtype, device=scores.device)
    if ((y < 0) | (y > 1)).any():
        raise ValueError("gate_cdf: y must lie in [0, 1], the range of a hard-concrete gate")
    x = (y - left) / (right - left)  # the un-stretched value, in (0, 1) for y in [0, 1]
    cdf = torch.sigmoid(beta * (torch.log(x) - torch.log1p(-x)) - scores)
    return torch.where(y >= 1, torch.ones_like(cdf), cdf)


def expected_l0(
    scores: Sequence[torch.Tensor], *, left: float = LEFT, right: float = RIGHT, beta: float = BETA
) -> torch.Tensor:
    """``mean_m mean_ij P(gate^m_ij > 0)``, the mean-normalised expected L0 norm."""
    return mean_of_means([prob_nonzero(s, left=left, right=right, beta=beta) for s in scores])


class L0(PruningMethod):
    """Hard-concrete gates (a sample in training, ``1[S > 0]`` in evaluation), E[L0] penalty."""

    name = "l0"
    knobs = ("lam",)
    scores = "parameter"
    lam_schedule = "constant"
    default_score_init = L0_INIT
    chapter = "book/06_l0_regularisation.ipynb"
    eval_gate = "binary"  # "continuous" only inside continuous_eval()

    @classmethod
    def check_config(cls, config) -> None:
        if not (config.l0_left < 0.0 and config.l0_right > 1.0 and config.l0_beta > 0.0):
            raise ValueError(
                "hard-concrete needs l0_left < 0, l0_right > 1 and l0_beta > 0 "
                f"(got {config.l0_left}, {config.l0_right}, {config.l0_beta})"
            )

    def forward_mask(self, layer) -> torch.Tensor:
        if layer.training:
            c = self.config
            return sample_gates(layer.scores, left=c.l0_left, right=c.l0_right, beta=c.l0_beta)
        if self.eval_gate == "continuous":
            return deterministic_gates(layer.scores, left=self.config.l0_left,
                                       right=self.config.l0_right)
        return self.mask(layer)

    def mask(self, layer) -> torch.Tensor:
        return binary_gates(layer.scores, left=self.config.l0_left, right=self.config.l0_right)

    def scheduled(self, curve) -> dict:
        return {"lam": self.lam_at(curve)}

    def penalty(self, scores: Sequence[torch.Tensor]) -> torch.Tensor:
        c = self.config
        return expected_l0(scores, left=c.l0_left, right=c.l0_right, beta=c.l0_beta)


@contextmanager
def continuous_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, the *evaluation* forward passes of every L0 layer of ``model`` use
    Louizos' continuous gate ``Mhat = min(1, max(0, (r - l) sigmoid(S) + l))`` (what the
    authors' code evaluated and exported) instead of mplib's binary ``1[S > 0]``.

    Training forward passes (a sample) are unchanged, and so are ``mask()``, ``bake`` and the
    sparsity reports, which stay binary. The previous gate is restored on exit, also after an
    error::

        with continuous_eval(model):
            logits = model(**batch)          # model.eval(): W * Mhat
    """
    layers = [m for m in model.modules() if isinstance(getattr(m, "rule", None), L0)]
    if not layers:
        raise ValueError(
            "continuous_eval: no layer of this model is gated by method 'l0'; wrap it first, "
            "e.g. mplib.wrap(model, mplib.PruningConfig(method='l0'))"
        )
    before = [m.rule.eval_gate for m in layers]
    try:
        for m in layers:
            m.rule.eval_gate = "continuous"
        yield model
    finally:
        for m, gate in zip(layers, before, strict=True):
            m.rule.eval_gate = gate
