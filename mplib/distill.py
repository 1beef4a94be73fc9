"""Knowledge distillation from a dense fine-tuned teacher (Hinton et al. 2015; paper §6).

    loss = alpha_distil * T^2 * KL( softmax(z_teacher / T) || softmax(z_student / T) )
         + alpha_task * task_loss

with the KL averaged over the batch (``batchmean``). ``T^2`` keeps the soft-target gradients
on the same scale as the task loss when ``T`` changes. The paper's runs used
``alpha_distil = 0.9``, ``alpha_task = 0.1`` and (script default) ``T = 2`` (paper.md §4.3).

Taught in: the distillation chapter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    classes = student_logits.shape[-1]
    log_p_student = F.log_softmax(student_logits.reshape(-1, classes) / temperature, dim=-1)
    p_teacher = F.softmax(teacher_logits.detach().reshape(-1, classes) / temperature, dim=-1)
    kl = F.kl_div(log_p_student, p_teacher, reduction="batchmean")
    loss = alpha_distil * temperature**2 * kl
    if task_loss is not None and alpha_task != 0:
        loss = loss + alpha_task * task_loss
    return loss
