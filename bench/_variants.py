"""The models under test, shared by ``bench_train_step.py`` and ``bench_mask_cost.py``.

A *variant* is a randomly initialised ``BertForSequenceClassification`` with its AdamW optimizer
(on :func:`mplib.param_groups`) and, unless it is ``dense``, its masks:

- every mplib method with its default targets (``METHOD_CONFIGS``), plus ``movement_global``
  (``scope="global"``, budgets recomputed at every step) and ``movement_before`` (movement with
  :func:`topk_mask_before`, mplib's previous Top_v: the same masks, the old cost);
- ``emmental``: a re-implementation of the authors' masked layer, which sorts every score matrix
  in full on every forward and passes the gradient straight through.

Every masked variant starts inside the pruning phase of the cubic schedule (kept ratio about 0.5
and moving at every step, towards 0.1), with distinct random scores (the state in the middle of
training; an all-equal init would give the selection an easier all-ties input).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import mplib

TOTAL_STEPS = 20_000  # schedule length; the benchmarks run inside its pruning phase
TARGET_KEEP = 0.5  # start where the scheduled keep ratio is about this
FINAL_KEEP = 0.1

METHOD_CONFIGS: dict[str, dict] = {
    "magnitude": dict(method="magnitude", keep_ratio=0.1),
    "movement": dict(method="movement", keep_ratio=0.1),
    "soft_movement": dict(method="soft_movement", tau=0.1, lam=1.0),
    "l0": dict(method="l0", lam=1.0),
    "threshold": dict(method="threshold"),
    "random": dict(method="random", keep_ratio=0.1),
    "accumulated_movement": dict(method="accumulated_movement", keep_ratio=0.1),
    "snip": dict(method="snip", keep_ratio=0.1),
    "movement_global": dict(method="movement", keep_ratio=0.1, scope="global", global_every=1),
    "movement_before": dict(method="movement", keep_ratio=0.1),
}
VARIANTS = ("dense", "magnitude", "movement", "movement_before", "soft_movement", "l0",
            "threshold", "random", "accumulated_movement", "snip", "movement_global", "emmental")


def topk_mask_before(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``mplib.topk.topk_mask`` as of commit 35cac10, kept for the before/after comparison: NaN
    check with ``isnan().any()``, ``torch.kthvalue``, then ``>``, a count, ties by cumsum."""
    n = scores.numel()
    with torch.no_grad():
        flat = scores.detach().reshape(-1)
        if k == n:
            return torch.ones_like(scores)
        if k == 0:
            return torch.zeros_like(scores)
        if torch.isnan(flat).any():
            raise ValueError("scores contain NaN")
        kth = torch.kthvalue(flat, n - k + 1).values
        keep = flat > kth
        missing = k - int(keep.sum())
        if missing > 0:
            tie = flat == kth
            keep |= tie & (torch.cumsum(tie, 0) <= missing)
        return keep.reshape(scores.shape).to(scores.dtype)


@contextlib.contextmanager
def previous_topk():
    """Within the block, every loaded mplib module that imported ``topk_mask`` calls
    :func:`topk_mask_before` instead (found by identity, so it holds wherever the modules live)."""
    current = mplib.topk_mask
    holders = [m for name, m in list(sys.modules.items())
               if name.split(".")[0] == "mplib" and getattr(m, "topk_mask", None) is current]
    for module in holders:
        module.topk_mask = topk_mask_before
    try:
        yield
    finally:
        for module in holders:
            module.topk_mask = current


class SortTopKStraightThrough(torch.autograd.Function):
    """The emmental behaviour: sort ALL scores (descending) on every forward, ones at the first k
    positions of the order, zeros elsewhere; identity backward (straight-through)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:
        flat = scores.reshape(-1)
        order = torch.sort(flat, descending=True).indices
        mask = torch.empty_like(flat)
        mask[order[k:]] = 0.0
        mask[order[:k]] = 1.0
        return mask.view_as(scores)

    @staticmethod
    def backward(ctx, grad_mask: torch.Tensor):
        return grad_mask, None


class EmmentalMaskedLinear(nn.Module):
    """``F.linear(x, W * TopK_sort(S), b)`` with learned scores (kept ratio set from outside)."""

    def __init__(self, base: nn.Module, keep_ratio: float = 1.0):
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self.scores = nn.Parameter(torch.zeros_like(base.weight, requires_grad=False))
        self.keep_ratio = keep_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # same k as mplib (the authors used int(v * N); ceil keeps the two variants comparable)
        k = mplib.keep_count(self.weight.numel(), self.keep_ratio)
        mask = SortTopKStraightThrough.apply(self.scores, k)
        return F.linear(x, self.weight * mask, self.bias)


def wrap_emmental(model: nn.Module) -> list[EmmentalMaskedLinear]:
    """Put the reference layer where mplib's default targets are (six matrices per layer)."""
    config = mplib.PruningConfig(method="movement", keep_ratio=FINAL_KEEP)
    layers = []
    for name, masked in mplib.masked_layers(mplib.wrap(model, config)).items():
        parent_name, _, child = name.rpartition(".")
        layer = EmmentalMaskedLinear(masked)
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
        layers.append(layer)
    return layers


def build_model(model_cfg: dict, seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**model_cfg, num_labels=2))
    model.train()
    return model


def keep_at(step: int) -> float:
    """The scheduled kept ratio (1 -> ``FINAL_KEEP`` over ``TOTAL_STEPS``, no warm-up)."""
    return mplib.cubic_schedule(step, total_steps=TOTAL_STEPS, initial=1.0, final=FINAL_KEEP,
                                warmup_steps=0, cooldown_steps=0)


def start_step(target: float = TARGET_KEEP) -> int:
    """First step at which the cubic schedule has come down to ``target``."""
    return next((s for s in range(TOTAL_STEPS) if keep_at(s) <= target), 0)


@dataclass
class Variant:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    pruner: mplib.Pruner | None = None
    emmental_layers: list = field(default_factory=list)
    step_index: int = 0
    times: list = field(default_factory=list)
    cpu_times: list = field(default_factory=list)
    keep_ratios: list = field(default_factory=list)

    def train_step(self, inputs: dict, labels: torch.Tensor) -> None:
        """One schedule step, forward, backward and optimizer step."""
        before = self.name == "movement_before"
        with previous_topk() if before else contextlib.nullcontext():
            t = self.step_index
            if self.pruner is not None:
                self.keep_ratios.append(self.pruner.step(t).get("keep_ratio"))
            elif self.emmental_layers:
                for layer in self.emmental_layers:
                    layer.keep_ratio = keep_at(t)
                self.keep_ratios.append(keep_at(t))
            loss = self.model(**inputs, labels=labels).loss
            if self.pruner is not None:
                loss = loss + self.pruner.penalty()
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step_index += 1


def make_variant(name: str, model_cfg: dict, *, seed: int = 0, lr: float = 3e-5,
                 score_lr: float = 1e-2) -> Variant:
    model = build_model(model_cfg, seed)
    pruner, emmental_layers = None, []
    s0 = start_step()
    if name in METHOD_CONFIGS:
        config = mplib.PruningConfig(**METHOD_CONFIGS[name], seed=seed)
        pruner = mplib.Pruner(model, config, total_steps=TOTAL_STEPS)
    elif name == "emmental":
        emmental_layers = wrap_emmental(model)
    elif name != "dense":
        raise ValueError(f"unknown variant {name!r}")
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # distinct scores, as in the middle of training
        for module in model.modules():
            scores = getattr(module, "scores", None)
            if isinstance(scores, torch.Tensor):
                scores.add_(0.01 * torch.randn(scores.shape, generator=gen))
    optimizer = torch.optim.AdamW(
        mplib.param_groups(model, lr=lr, score_lr=score_lr, weight_decay=0.01))
    variant = Variant(name, model, optimizer, pruner, emmental_layers, step_index=s0)
    if pruner is not None:
        pruner.step(s0)
    return variant
