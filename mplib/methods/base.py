"""The contract every pruning method fulfils, and the Top_v family most of them share.

A method is everything that differs between pruning rules, in one class (the idea of
``torch.nn.utils.prune``'s ``compute_mask``, one module per method as in peft):

====================  ======================================================================
``knobs``             which of ``keep_ratio`` / ``tau`` / ``lam`` the method reads
``scores``            ``"none"``, ``"parameter"`` (learned ``S``) or ``"buffer"`` (fixed or
                      accumulated ``S``, no gradient)
``initial_scores``    the score tensor ``S`` a layer starts with
``forward_mask``      ``M`` of a training forward pass, with the gradient it sends to ``S``
``mask``              the binary mask of evaluation and export (what ``bake`` applies)
``scheduled``         the values the cubic schedule drives at a step (``keep_ratio_t``, ...)
``penalty``           ``R(S)``; the pruner adds ``lam_t * R(S)`` to the loss
``options``           config fields besides the knobs that the method reads (``block_size``,
                      ``head_size`` of the structured methods); an error for the others
``ddp``               behaviour under data parallelism: ``"exact"`` (parameters are
                      all-reduced, masks agree), ``"average_buffers"`` (linear update of a
                      score buffer, averaged after each step) or ``"refuse"``
====================  ======================================================================

:class:`~mplib.masked.MaskedLinear`, :class:`~mplib.pruner.Pruner`,
:class:`~mplib.config.PruningConfig` and :mod:`mplib.distributed` only call this contract;
none of them asks which method it is. A method object is made once per wrapped layer from the
config (``method_cls(config)``) and keeps no tensors: the layer holds ``S`` and the current
``keep_ratio`` / ``tau`` / ``budget``.

Taught in: book/01_masks_and_magnitude.ipynb (the methods table).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import nn

from ..topk import keep_count, topk_mask

Curve = Callable[[float, float], float]
"""``curve(initial, final)``: the cubic schedule's value at the current step (see Pruner)."""


class PruningMethod:
    """Base class: a method that keeps every weight. Subclasses override what differs."""

    name: ClassVar[str] = ""
    knobs: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[str, ...]] = ()
    scores: ClassVar[str] = "none"
    ddp: ClassVar[str] = "exact"
    lam_schedule: ClassVar[str] = "cubic"
    default_score_init: ClassVar[float] = 0.0
    default_tau: ClassVar[float | None] = None
    accumulates: ClassVar[bool] = False
    chapter: ClassVar[str] = ""

    def __init__(self, config):
        self.config = config

    # -- configuration ---------------------------------------------------------------------
    @classmethod
    def check_config(cls, config) -> None:
        """Fill this method's defaults into ``config`` and raise ``ValueError`` on bad values."""

    # -- scores ----------------------------------------------------------------------------
    def initial_scores(self, weight: torch.Tensor, name: str) -> torch.Tensor | None:
        """``S`` at the start: the config's ``score_init`` (constant, uniform or kaiming)."""
        if self.scores == "none":
            return None
        c = self.config
        s = torch.empty_like(weight, requires_grad=False)
        if c.score_init == "constant":
            s.fill_(c.score_init_value)
        elif c.score_init == "uniform":
            s.uniform_(-c.score_init_value, c.score_init_value)
        else:  # kaiming, as nn.Linear initialises its weight
            nn.init.kaiming_uniform_(s, a=math.sqrt(5))
        return s

    # -- masks -----------------------------------------------------------------------------
    def forward_mask(self, layer) -> torch.Tensor:
        """``M`` for this forward pass (carries the method's gradient to ``S``)."""
        return self.mask(layer)

    def mask(self, layer) -> torch.Tensor:
        """The binary mask (no gradient): evaluation, export, reports."""
        return torch.ones_like(layer.weight)

    def accumulate(self, layer, grad_weight: torch.Tensor) -> None:
        """Update a score *buffer* from the weight's gradient (``accumulates`` methods only)."""

    # -- schedule and penalty --------------------------------------------------------------
    def scheduled(self, curve: Curve) -> dict:
        """Values the schedule sets at a step, e.g. ``{"keep_ratio": curve(1.0, 0.1)}``."""
        return {}

    def lam_at(self, curve: Curve) -> float:
        """``lam_t``: ``lam * progress_t`` (cubic, 0 -> 1) or ``lam`` (constant)."""
        c = self.config
        return c.lam if c.lam_schedule == "constant" else c.lam * curve(0.0, 1.0)

    def penalty(self, scores: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """``R(S)`` over all wrapped layers' scores, or None when the method has no penalty."""
        return None

    def state_repr(self, layer) -> str:
        """What ``MaskedLinear.extra_repr`` shows of the current state."""
        return ""


class TopV(PruningMethod):
    """Top_v family (paper Eq. 1): keep the ``ceil(v N)`` highest *ranking* values per matrix.

    ``v = keep_ratio_t`` follows the cubic schedule from ``initial_keep_ratio`` (1) to
    ``keep_ratio``. With ``scope="global"`` one Top_v runs over all matrices together and each
    layer gets its exact ``budget`` (:mod:`mplib.global_topk`). Subclasses choose what is
    ranked (:meth:`ranking_source`) and whether ``S`` learns.
    """

    knobs = ("keep_ratio",)

    @classmethod
    def check_config(cls, config) -> None:
        from ..config import check_fraction

        if config.keep_ratio is None:
            raise ValueError(
                f"method {config.method!r} needs keep_ratio (the fraction of weights kept, "
                "in (0, 1]); e.g. PruningConfig(method=..., keep_ratio=0.1)"
            )
        check_fraction("keep_ratio", config.keep_ratio)
        check_fraction("initial_keep_ratio", config.initial_keep_ratio)
        if config.keep_ratio > config.initial_keep_ratio:
            raise ValueError(
                f"keep_ratio={config.keep_ratio} is larger than initial_keep_ratio="
                f"{config.initial_keep_ratio}; the schedule only removes weights"
            )

    def ranking_source(self, layer) -> tuple[torch.Tensor, bool]:
        """``(tensor, absolute)``: Top_v ranks ``tensor`` (``|tensor|`` if ``absolute``)."""
        return layer.scores, False

    def ranking(self, layer) -> torch.Tensor:
        """What Top_v ranks, detached: ``S`` (or ``|W|`` for magnitude)."""
        t, absolute = self.ranking_source(layer)
        return t.detach().abs() if absolute else t.detach()

    def kept_count(self, layer) -> int:
        """Entries kept now: the global ``budget`` or ``ceil(keep_ratio_t * N)``."""
        if layer.budget is not None:
            return layer.budget
        return keep_count(layer.weight.numel(), layer.keep_ratio)

    def mask(self, layer) -> torch.Tensor:
        with torch.no_grad():
            return topk_mask(self.ranking(layer), self.kept_count(layer))

    def scheduled(self, curve: Curve) -> dict:
        return {"keep_ratio": curve(self.config.initial_keep_ratio, self.config.keep_ratio)}

    def state_repr(self, layer) -> str:
        if layer.budget is not None:
            return f"budget={layer.budget}"
        return f"keep_ratio={layer.keep_ratio}"


class AccumulatedTopV(TopV):
    """Top_v of a score *buffer* summed from the weights' own gradients after each backward.

    ``S`` starts at 0 and has no optimizer;
    :meth:`PruningMethod.accumulate` gets ``grad_W = (dL/dW') ⊙ M``
    (zero where pruned, so a pruned weight stops accumulating).
    """

    scores = "buffer"
    accumulates = True

    def initial_scores(self, weight: torch.Tensor, name: str) -> torch.Tensor:
        return torch.zeros_like(weight, requires_grad=False)
