"""The pruner: drives the masks along the schedule and supplies the penalty, step by step.

Usage in a plain training loop (0-based steps, ``total_steps`` optimizer updates)::

    pruner = mplib.Pruner(model, config, total_steps=T, warmup_steps=T // 10, cooldown_steps=T // 5)
    for step, batch in enumerate(batches):
        pruner.step(step)                          # masks for this step
        loss = task_loss(model(batch)) + pruner.penalty()
        loss.backward(); optimizer.step(); optimizer.zero_grad()

What ``step`` sets, per method (all from :func:`mplib.schedule.cubic_schedule`, a pure function
of ``step``, so a resumed run continues identically):

* Top_v methods: ``keep_ratio_t`` from ``initial_keep_ratio`` (1) to ``keep_ratio``; with
  ``scope="global"`` the per-matrix budgets of one global Top_v are recomputed every
  ``global_every`` steps.
* ``soft_movement``: ``tau_t`` from ``initial_tau`` (0) to ``tau`` on ``sigmoid(S)``.
* ``soft_movement``, ``l0``: ``lam_t = lam * progress_t`` (cubic) or ``lam`` (constant).

Taught in: the training chapters.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import PruningConfig
from .global_topk import assign_global_budgets
from .regularizers import expected_l0, l1_sigmoid
from .report import sparsity_report
from .schedule import check_schedule, cubic_schedule, progress
from .surgery import masked_layers, wrap


class Pruner:
    """Schedule, penalty and reporting for a model wrapped (or to be wrapped) by mplib.

    Args:
        model: a model; wrapped with ``config`` if it has no mplib layers yet.
        config: the :class:`~mplib.config.PruningConfig`.
        total_steps: number of optimizer steps of the whole run (``T``).
        warmup_steps: dense steps before pruning starts (``t_i``).
        cooldown_steps: final steps at the target sparsity (``t_f``).
    """

    def __init__(
        self,
        model: nn.Module,
        config: PruningConfig,
        *,
        total_steps: int,
        warmup_steps: int = 0,
        cooldown_steps: int = 0,
    ):
        check_schedule(total_steps=total_steps, warmup_steps=warmup_steps,
                       cooldown_steps=cooldown_steps)
        self.model = model
        self.config = config
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.cooldown_steps = cooldown_steps
        if not masked_layers(model):
            wrap(model, config)
        self.layers = list(masked_layers(model).values())
        if any(layer.method != config.method for layer in self.layers):
            raise ValueError("model was wrapped with another method than config.method")
        self.state: dict = {}
        self.step(0)

    def _schedule(self, step: int, initial: float, final: float) -> float:
        return cubic_schedule(step, total_steps=self.total_steps, initial=initial, final=final,
                              warmup_steps=self.warmup_steps, cooldown_steps=self.cooldown_steps)

    def values_at(self, step: int) -> dict:
        """Scheduled values at ``step`` without touching the model (for plots and logs)."""
        c = self.config
        out: dict = {"step": step}
        if c.keep_ratio is not None:
            out["keep_ratio"] = self._schedule(step, c.initial_keep_ratio, c.keep_ratio)
        if c.method == "soft_movement":
            out["tau"] = self._schedule(step, c.initial_tau, c.tau)
        elif c.method == "threshold":
            out["tau"] = c.tau
        if c.lam is not None:
            scale = 1.0 if c.lam_schedule == "constant" else progress(
                step, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                cooldown_steps=self.cooldown_steps)
            out["lam"] = c.lam * scale
        return out

    def step(self, step: int) -> dict:
        """Apply the schedule for optimizer step ``step`` (call it before that step's forward)."""
        values = self.values_at(step)
        for layer in self.layers:
            if "keep_ratio" in values:
                layer.keep_ratio = values["keep_ratio"]
            if "tau" in values:
                layer.tau = values["tau"]
        every = self.config.global_every
        if self.config.scope == "global" and (not self.state or step % every == 0):
            assign_global_budgets(self.layers, values["keep_ratio"])
        self.state = values
        return values

    def penalty(self) -> torch.Tensor:
        """``lam_t * R(S)`` for soft movement (L1 of sigmoid) and L0 (expected L0); else 0."""
        method, lam = self.config.method, self.state.get("lam", 0.0)
        if method == "soft_movement":
            return lam * l1_sigmoid([layer.scores for layer in self.layers])
        if method == "l0":
            c = self.config
            return lam * expected_l0([layer.scores for layer in self.layers],
                                     left=c.l0_left, right=c.l0_right, beta=c.l0_beta)
        return torch.zeros((), device=self.layers[0].weight.device)

    def report(self) -> dict:
        """:func:`mplib.report.sparsity_report` plus the scheduled values now in force."""
        out = sparsity_report(self.model)
        out["schedule"] = dict(self.state)
        return out
