"""Knowledge distillation from a dense fine-tuned teacher (Hinton et al. 2015; paper §6).

    loss = alpha_distil * T^2 * KL( softmax(z_teacher / T) || softmax(z_student / T) )
         + alpha_task * task_loss

with the KL averaged over the batch (``batchmean``). ``T^2`` keeps the soft-target gradients
on the same scale as the task loss when ``T`` changes. The paper's runs used
``alpha_distil = 0.9``, ``alpha_task = 0.1`` and (script default) ``T = 2`` (paper.md §4.3).

:class:`Distillation` bundles the teacher with ``T`` and the two weights; its
:meth:`~Distillation.loss` runs the teacher under ``no_grad`` (in eval mode, frozen) and mixes.

Taught in: book/07_schedules_and_distillation.ipynb (the T^2 factor derived and checked with
autograd, the alpha mix, the measured effect on pruned ci runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    task_loss: torch.Tensor | None = None,
    *,
    temperature: float = 2.0,
    alpha_distil: float = 0.9,
    alpha_task: float = 0.1,
) -> torch.Tensor:
    """Distillation loss for logits of shape ``(batch, classes)`` (or ``(..., classes)``).

    Args:
        student_logits: the pruned model's logits (gradients flow into it).
        teacher_logits: the teacher's logits (detached here).
        task_loss: the student's own task loss; required when ``alpha_task > 0``.
        temperature: ``T > 0``.
    """
    if not temperature > 0:  # also catches NaN
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)} (same task head and label count?)"
        )
    if alpha_task != 0 and task_loss is None:
        raise ValueError("alpha_task > 0 needs task_loss (or pass alpha_task=0)")
    if task_loss is not None and (not torch.is_tensor(task_loss) or task_loss.ndim != 0
                                  or not task_loss.is_floating_point()):
        got = (f"a {task_loss.dtype} tensor of shape {tuple(task_loss.shape)}"
               if torch.is_tensor(task_loss) else type(task_loss).__name__)
        raise ValueError(
            f"task_loss must be the student's scalar task loss (e.g. outputs.loss), got {got}. "
            "Labels go to the model (model(**batch, labels=labels)), not to distillation_loss")
    classes = student_logits.shape[-1]
    log_p_student = F.log_softmax(student_logits.reshape(-1, classes) / temperature, dim=-1)
    p_teacher = F.softmax(teacher_logits.detach().reshape(-1, classes) / temperature, dim=-1)
    kl = F.kl_div(log_p_student, p_teacher, reduction="batchmean")
    loss = alpha_distil * temperature**2 * kl
    if task_loss is not None and alpha_task != 0:
        loss = loss + alpha_task * task_loss
    return loss


@dataclass
class Distillation:
    """A dense teacher and the mix of :func:`distillation_loss` (paper's runs: 2, 0.9, 0.1).

    The teacher is put in eval mode and frozen here; it follows the student's device.
    """

    teacher: nn.Module
    temperature: float = 2.0
    alpha_distil: float = 0.9
    alpha_task: float = 0.1

    def __post_init__(self):
        if not isinstance(self.teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(self.teacher).__name__}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def teacher_logits(self, inputs: dict) -> torch.Tensor:
        """The teacher's logits for the model ``inputs`` (labels are not passed)."""
        device = next(v for v in inputs.values() if torch.is_tensor(v)).device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        return self.teacher(**{k: v for k, v in inputs.items() if k not in ("labels", "label")}
                            ).logits

    def loss(self, student_logits: torch.Tensor, inputs: dict,
             task_loss: torch.Tensor | None) -> torch.Tensor:
        """:func:`distillation_loss` against the teacher's logits on ``inputs``."""
        return distillation_loss(student_logits, self.teacher_logits(inputs), task_loss,
                                 temperature=self.temperature, alpha_distil=self.alpha_distil,
                                 alpha_task=self.alpha_task)
