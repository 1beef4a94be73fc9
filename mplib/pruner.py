"""The pruner: drives the masks along the schedule and supplies the penalty, step by step.

Usage in a plain training loop (0-based steps, ``total_steps`` optimizer updates)::

    pruner = mplib.Pruner(model, config, total_steps=T, warmup_steps=T // 10, cooldown_steps=T // 5)
    for step, batch in enumerate(batches):
        pruner.step(step)                          # masks for this step
        loss = task_loss(model(batch)) + pruner.penalty()
        loss.backward(); optimizer.step(); optimizer.zero_grad()

What ``step`` sets is the method's business (``method.scheduled``, :mod:`mplib.methods`), all
from :func:`mplib.schedule.cubic_schedule`, a pure function of ``step``, so a resumed run
continues identically:

* Top_v methods: ``keep_ratio_t`` from ``initial_keep_ratio`` (1) to ``keep_ratio``; with
  ``scope="global"`` the per-matrix budgets of one global Top_v are recomputed every
  ``global_every`` steps.
* ``soft_movement``: ``tau_t`` from ``initial_tau`` (0) to ``tau`` on ``sigmoid(S)``.
* ``soft_movement``, ``l0``: ``lam_t = lam * progress_t`` (cubic) or ``lam`` (constant).

``penalty()`` is ``lam_t * method.penalty(S)``, zero for methods without one.

Taught in: book/02_straight_through.ipynb (the schedule drives the masks),
book/03_fine_pruning.ipynb (fine-pruning runs).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import PruningConfig
from .global_topk import assign_global_budgets
from .report import sparsity_report
from .schedule import check_schedule, cubic_schedule
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
        self.rule = config.method_class(config)  # the schedule and penalty of *this* config
        self.state: dict = {}
        self.step(0)

    def _schedule(self, step: int, initial: float, final: float) -> float:
        return cubic_schedule(step, total_steps=self.total_steps, initial=initial, final=final,
                              warmup_steps=self.warmup_steps, cooldown_steps=self.cooldown_steps)

    def values_at(self, step: int) -> dict:
        """Scheduled values at ``step`` without touching the model (for plots and logs)."""
        def curve(initial: float, final: float) -> float:
            return self._schedule(step, initial, final)

        return {"step": step, **self.rule.scheduled(curve)}

    def step(self, step: int) -> dict:
        """Apply the schedule for optimizer step ``step`` (call it before that step's forward)."""
        values = self.values_at(step)
        for layer in self.layers:
            for key in ("keep_ratio", "tau"):
                if key in values:
                    setattr(layer, key, values[key])
        every = self.config.global_every
        if self.config.scope == "global" and (not self.state or step % every == 0):
            assign_global_budgets(self.layers, values["keep_ratio"])
        self.state = values
        return values

    def penalty(self) -> torch.Tensor:
        """``lam_t * R(S)`` for methods with a penalty (soft movement, L0); else 0."""
        lam = self.state.get("lam", 0.0)
        if lam:
            r = self.rule.penalty([layer.scores for layer in self.layers])
            if r is not None:
                return lam * r
        return torch.zeros((), device=self.layers[0].weight.device)

    def report(self) -> dict:
        """:func:`mplib.report.sparsity_report` plus the scheduled values now in force."""
        out = sparsity_report(self.model)
        out["schedule"] = dict(self.state)
        return out
