"""The training objective of fine-pruning, written once (paper §4 Table 1, §6)::

    L = CE(z, y)                                                     (task loss)
    L = alpha_distil * T^2 * KL(softmax(z_teacher/T) || softmax(z/T))
        + alpha_task * CE(z, y)                                      (with a teacher)
    L = L + lam_t * R(S)                                             (soft movement, L0)

Used by mplib's plain loop (:mod:`mplib.lab.train`) and by the ``Trainer`` adapter
(:mod:`mplib.hf`), so both optimise exactly the same thing.

Taught in: book/03_fine_pruning.ipynb (the loop); the teacher term in
book/07_schedules_and_distillation.ipynb.
"""

from __future__ import annotations

import torch

from .distill import Distillation


def training_loss(outputs, inputs: dict, *, pruner=None,
                  distillation: Distillation | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, task_loss)`` for a model output that has ``.loss`` (given labels) and ``.logits``.

    ``inputs`` are the model's inputs (used by the teacher); ``pruner`` adds its
    ``lam_t * R(S)`` (zero for methods without a penalty).
    """
    task_loss = outputs.loss
    if task_loss is None:
        raise ValueError("the model returned no loss: pass labels in the batch "
                         "(model(**batch) with a 'labels' entry)")
    loss = task_loss
    if distillation is not None:
        loss = distillation.loss(outputs.logits, inputs, task_loss)
    if pruner is not None:
        loss = loss + pruner.penalty()
    return loss, task_loss
