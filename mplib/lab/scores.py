"""What movement scores measured: the score gradients of a run, summed several ways (paper §4, §7).

A movement score's gradient is ``g_t = dL/dS = (dL/dW') ⊙ W`` (Eq. 2, every entry, kept or
pruned). :class:`ScoreTrace` watches any loop that steps a torch optimizer holding the scores and,
just before each step, reads ``g_t`` as that optimizer is about to apply it (after any gradient
clipping) together with the scores' learning rate ``alpha_t``. Per masked layer it keeps::

    sgd        = -sum_t alpha_t g_t                         Eq. 3: S under plain SGD at these rates
    normalised = -sum_t alpha_t g_t / rms_t(g)              rms_t(g) = sqrt(mean_{s<=t} g_s^2);
                                                            Adam's per-coordinate scale, no momentum
    signs      = -sum_t alpha_t sign(g_t)                   one vote per step, size ignored
    movement   = -sum_t g_t                                 accumulated_movement's rule, ungated
    saliency   =  sum_t |g_t|                               snip's rule, ungated
    sq         =  sum_t g_t^2

"Ungated": the real ``accumulated_movement`` and ``snip`` methods use ``grad_W = (dL/dW') ⊙ M``,
which is zero where their own mask prunes; here every entry keeps accumulating, so the sums rank
all weights by one run's gradients. ``start`` holds each layer's weights when the trace began.
The sums have the scores' dtype and device.

:func:`mask_overlap` and :func:`rank_correlation` compare two rankings of one matrix.

Taught in: book/04_movement_scores.ipynb.
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

__all__ = ["SUMS", "ScoreTrace", "mask_overlap", "rank_correlation"]

SUMS = ("sgd", "normalised", "signs", "movement", "saliency", "sq")
"""The per-entry sums :class:`ScoreTrace` keeps for every layer."""


class ScoreTrace:
    """Accumulate the sums of the module docstring for ``layers`` (name -> masked layer).

    Use as a context manager around training (the hook is removed on exit)::

        with ScoreTrace(mplib.masked_layers(model)) as trace:
            train(...)
        trace.sums["bert.encoder.layer.0.attention.self.query"]["sgd"]   # like the weight

    Every layer must have learned scores (an ``nn.Parameter``: movement, soft_movement, ...).
    """

    def __init__(self, layers: dict):
        if not layers:
            raise ValueError("ScoreTrace needs at least one masked layer (mplib.masked_layers)")
        bad = [n for n, layer in layers.items()
               if not isinstance(getattr(layer, "scores", None), torch.nn.Parameter)]
        if bad:
            raise ValueError(f"layers without learned scores (an nn.Parameter): {bad}; trace a "
                             "method whose scores learn, e.g. method='movement'")
        self.layers = dict(layers)
        self.start = {n: layer.weight.detach().clone() for n, layer in self.layers.items()}
        self.sums = {n: {k: torch.zeros_like(layer.scores.detach()) for k in SUMS}
                     for n, layer in self.layers.items()}
        self.steps = 0
        self._handle = None

    def __enter__(self) -> ScoreTrace:
        self._handle = register_optimizer_step_pre_hook(self._before_step)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _before_step(self, optimizer, args, kwargs) -> None:
        lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        found = [(n, layer) for n, layer in self.layers.items() if id(layer.scores) in lr_of]
        if not found:
            return  # another optimizer (e.g. the weights' own)
        self.steps += 1
        with torch.no_grad():
            for name, layer in found:
                if layer.scores.grad is None:
                    continue
                g = layer.scores.grad
                alpha = float(lr_of[id(layer.scores)])
                s = self.sums[name]
                s["sgd"].add_(g, alpha=-alpha)
                s["signs"].add_(g.sign(), alpha=-alpha)
                s["movement"].sub_(g)
                s["saliency"].add_(g.abs())
                s["sq"].addcmul_(g, g)
                rms = (s["sq"] / self.steps).sqrt()
                s["normalised"].sub_(alpha * torch.where(rms > 0, g / rms, torch.zeros_like(g)))


def mask_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of the entries kept by mask ``a`` that mask ``b`` keeps too: ``|a ∩ b| / |a|``.

    For two masks that keep the same number of entries this is symmetric; two independent
    random masks keeping a fraction ``v`` each overlap by about ``v``.
    """
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes {tuple(a.shape)} and {tuple(b.shape)}; "
                         "compare masks of the same matrix")
    a, b = a.bool(), b.bool()
    kept = int(a.sum())
    if kept == 0:
        raise ValueError("mask a keeps no entry, so the overlap is undefined")
    return int((a & b).sum()) / kept


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of the entries of ``x`` (float64), ties sharing their average rank."""
    flat = x.detach().flatten().to(torch.float64)
    order = flat.argsort(stable=True)
    _, counts = torch.unique_consecutive(flat[order], return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    average = ends - (counts.to(torch.float64) + 1) / 2  # mean of the 0-based ranks in a group
    ranks = torch.empty_like(flat)
    ranks[order] = average.repeat_interleave(counts)
    return ranks


def rank_correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation of the entries of ``x`` and ``y`` (ties: average ranks).

    Top_v looks only at ranks, so this is the natural measure of how alike two scores rank.
    """
    if x.shape != y.shape:
        raise ValueError(f"tensors of different shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.numel() < 2:
        raise ValueError("rank correlation needs at least two entries")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float((rx.square().sum() * ry.square().sum()).sqrt())
    if denom == 0:
        raise ValueError("one of the tensors is constant: its ranks carry no order")
    return float((rx * ry).sum()) / denom
