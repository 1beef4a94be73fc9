"""Fine-pruning with the Hugging Face ``Trainer``, without subclassing or overriding it.

Three small adapters, one per concern (prior_art.md §9: ``compute_loss`` / ``training_step``
overrides broke whenever their signatures changed):

* :class:`PruningCallback` -- the *schedule*: ``pruner.step(state.global_step)`` at
  ``on_step_begin`` (before the step's forward, as in the plain loop), and the scheduled and
  achieved sparsity added to every log row at ``on_log``;
* :class:`PrunedModelForTraining` -- the *loss*: a model-side wrapper whose forward returns the
  wrapped model's output with ::

      loss = [alpha_distil * T^2 * KL(p_teacher^T || p_student^T) + alpha_task *] CE + lam_t * R(S)

  computed by :func:`mplib.objective.training_loss` as in the plain loop, so
  ``Trainer(model=PrunedModelForTraining(model, pruner), ...)`` runs unmodified;
* :func:`make_optimizer` (from :mod:`mplib.optim`, the plain loop's optimizer exactly) --
  AdamW over :func:`mplib.param_groups` (scores: own LR, no weight decay) with linear warm-up
  and decay, handed to ``Trainer(optimizers=(opt, sched))``.

Example::

    pruner = mplib.Pruner(model, config, total_steps=T, warmup_steps=T // 10, cooldown_steps=T // 5)
    trainer = Trainer(
        model=PrunedModelForTraining(model, pruner, teacher=teacher),
        args=TrainingArguments(output_dir=..., max_steps=T, ...),
        train_dataset=..., data_collator=...,
        optimizers=make_optimizer(model, lr=1e-4, total_steps=T, warmup_steps=T // 10),
        callbacks=[PruningCallback(pruner)],
    )
    trainer.train()

Taught in: book/09_hf_trainer.ipynb.
"""

from __future__ import annotations

from torch import nn
from transformers import TrainerCallback

from . import distributed as D
from .distill import Distillation
from .objective import training_loss
from .optim import make_optimizer

__all__ = ["PrunedModelForTraining", "PruningCallback", "make_optimizer"]


class PruningCallback(TrainerCallback):
    """Drive ``pruner`` from the Trainer's step counter and log its sparsity.

    Args:
        pruner: the :class:`mplib.Pruner`; its ``total_steps`` must equal the Trainer's
            ``max_steps`` (checked at ``on_train_begin``).
        per_layer: also log ``remaining_layer<k>`` for every transformer block.

    Logged at every logging step (in the ``logs`` dict and in ``state.log_history``):
    ``keep_ratio`` / ``tau`` / ``lam`` (scheduled) and ``remaining`` (achieved, global),
    ``remaining_of_all_parameters``.
    """

    def __init__(self, pruner, *, per_layer: bool = True):
        self.pruner = pruner
        self.per_layer = per_layer

    def on_train_begin(self, args, state, control, **kwargs):
        if state.max_steps and state.max_steps != self.pruner.total_steps:
            raise ValueError(
                f"the Trainer runs max_steps={state.max_steps} optimizer steps but the pruner's "
                f"schedule has total_steps={self.pruner.total_steps}; build the Pruner with "
                f"total_steps={state.max_steps} (or set TrainingArguments(max_steps=...))"
            )
        D.check_supported(self.pruner.config.method)

    def on_step_begin(self, args, state, control, **kwargs):
        # global_step = optimizer steps done = 0-based index of the step about to run
        self.pruner.step(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        D.sync_score_buffers(self.pruner.model)  # no-op on one process

    def values(self) -> dict:
        rep = self.pruner.report()
        out = {k: v for k, v in rep["schedule"].items() if k != "step"}
        out["remaining"] = rep["global"]
        out["remaining_of_all_parameters"] = rep["of_all_parameters"]
        if self.per_layer:
            for layer, frac in rep["per_layer"].items():
                out[f"remaining_layer{layer}"] = frac
        return out

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        extra = self.values()
        logs.update(extra)
        # Trainer.log stored a copy in log_history just before calling us: complete it too
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)


class PrunedModelForTraining(nn.Module):
    """``model`` plus the pruning penalty and (optionally) distillation, inside ``forward``.

    Args:
        model: the (wrapped) Hugging Face classifier; its forward must return ``.logits`` and,
            given ``labels``, ``.loss``.
        pruner: the :class:`mplib.Pruner` whose ``penalty()`` is added (None: no penalty).
        teacher: dense teacher model (kept out of this module's parameters and state dict; moved
            to the inputs' device on first use) or None.
        temperature, alpha_distil, alpha_task: see :func:`mplib.distillation_loss`.

    ``forward(**batch)`` returns the inner model's output with ``.loss`` replaced by the training
    objective (and ``.task_loss`` holding the plain cross-entropy) when ``labels`` are given;
    evaluation (no labels, or ``model.eval()``) returns the plain output and loss.
    """

    accepts_loss_kwargs = False  # Trainer then scales the loss for gradient accumulation itself

    def __init__(self, model: nn.Module, pruner=None, *, teacher: nn.Module | None = None,
                 temperature: float = 2.0, alpha_distil: float = 0.9, alpha_task: float = 0.1):
        super().__init__()
        self.model = model
        self.pruner = pruner
        # a plain dataclass attribute: the teacher stays out of this module's parameters
        self.distillation = None if teacher is None else Distillation(
            teacher, temperature=temperature, alpha_distil=alpha_distil, alpha_task=alpha_task)

    @property
    def config(self):
        return self.model.config

    @property
    def teacher(self) -> nn.Module | None:
        return None if self.distillation is None else self.distillation.teacher

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                **kwargs):
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        out = self.model(**inputs, labels=labels)
        if labels is None or not self.training:
            return out
        loss, task_loss = training_loss(out, inputs, pruner=self.pruner,
                                        distillation=self.distillation)
        out["loss"] = loss
        out["task_loss"] = task_loss.detach()
        return out

