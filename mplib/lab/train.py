"""The training loop the book reads: fine-pruning, one optimizer step at a time (paper §3-6).

One step ``t`` (0-based, ``T = total_steps`` optimizer updates) of :func:`train`, which is
:func:`training_step` (the loss is :func:`mplib.objective.training_loss`, the optimizer
:func:`mplib.optim.make_optimizer`, the same ones the ``Trainer`` adapter uses)::

    pruner.step(t)                             # masks for step t: M = Top_v_t(S), tau_t, lam_t
    z = model(x)                                     # forward through W' = W ⊙ M
    L = CE(z, y)                                     # task loss
    L = a_distil * T^2 * KL(softmax(z_teacher / T) || softmax(z / T)) + a_task * L   (teacher)
    L = L + lam_t * R(S)                             # pruner.penalty(): soft movement, L0
    L.backward()                                     # straight-through: dL/dS = dL/dW' ⊙ W
    clip ||grad||_2 <= 1                             # over weights and scores together
    AdamW step: weights at lr_t, scores at score_lr_t (no weight decay on scores)
    lr_t = lr * min((t + 1) / warmup, (T - t) / (T - warmup))        # linear warm-up, then decay

Every ``log_every`` steps the history gets a row (:mod:`mplib.lab.history`).

Checkpoint and resume. Every ``checkpoint_every`` steps the loop writes model, optimizer,
lr-scheduler, RNG states, the pruner's last scheduled values and global budgets, the history and
the step, to ``checkpoint_dir/checkpoint.pt`` atomically (:mod:`mplib.lab.checkpoint`).
The schedule is a pure function of the step and the data order of epoch ``e`` comes from a
generator re-seeded to ``seed + 1_000_003 * e``, so a killed run resumes at the same step with
the same schedule values, batches and masks, and ends bit-for-bit where an uninterrupted run ends.

How it trains is a :class:`TrainConfig`; ``train(..., lr=3e-5)`` overrides single fields.

Taught in: book/03_fine_pruning.ipynb (the loop); the teacher term in
book/07_schedules_and_distillation.ipynb.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from ..distill import Distillation
from ..objective import training_loss
from ..optim import linear_warmup_decay, make_optimizer
from . import checkpoint as ckpt_io
from .evaluate import evaluate, model_inputs, to_device
from .history import add_to_window, log_row, new_window

__all__ = ["TrainConfig", "evaluate", "linear_warmup_decay", "progress_enabled", "train",
           "training_step"]


@dataclass
class TrainConfig:
    """How :func:`train` trains (what it trains on and for how long are its arguments).

    Attributes:
        lr, score_lr, weight_decay: AdamW rates; scores in their own group without decay
            (:func:`mplib.param_groups`).
        warmup: LR warm-up steps (an int) or fraction of ``total_steps`` (a float < 1).
        freeze_embeddings: do not train the embeddings (the paper's §5 option).
        max_grad_norm: clip the global L2 norm of all gradients (weights and scores) to this
            (0 or None: no clipping).
        temperature, alpha_distil, alpha_task: distillation mix, used when a teacher is given
            (paper's runs: 2, 0.9, 0.1).
        log_every: steps between history rows.
        eval_every: steps between evaluations on ``loaders[eval_split]`` (None: none during
            training); ``eval_max_batches`` bounds each; ``eval_at_end`` adds one after the last
            step.
        progress: show a tqdm bar (never under ``$CI`` / ``$TQDM_DISABLE``).
        checkpoint_every, resume: resumable checkpoints (see :mod:`mplib.lab.checkpoint`).
        stop_after: stop (after checkpointing) once this many steps are done -- simulates a kill.
        seed: base seed of the data order.
    """

    lr: float = 1e-4
    score_lr: float = 1e-2
    weight_decay: float = 0.0
    warmup: int | float = 0.1
    freeze_embeddings: bool = False
    max_grad_norm: float | None = 1.0
    temperature: float = 2.0
    alpha_distil: float = 0.9
    alpha_task: float = 0.1
    log_every: int = 50
    eval_every: int | None = None
    eval_split: str = "validation"
    eval_max_batches: int | None = None
    eval_at_end: bool = True
    progress: bool = True
    checkpoint_every: int = 200
    resume: bool = True
    stop_after: int | None = None
    seed: int = 0

    def __post_init__(self):
        for name in ("log_every", "checkpoint_every", "eval_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                off = " (or None: evaluate only at the end)" if name == "eval_every" else (
                    "; to never checkpoint, use a value above the run's steps" * (
                        name == "checkpoint_every"))
                raise ValueError(f"{name} must be a positive number of steps, got {value!r}"
                                 + off)

    def warmup_steps(self, total_steps: int) -> int:
        w = self.warmup
        return int(round(w * total_steps)) if isinstance(w, float) and w < 1 else int(w)

    @classmethod
    def with_overrides(cls, base: TrainConfig | None, overrides: dict) -> TrainConfig:
        """``base`` (or the defaults) with ``overrides``; unknown names are a ``TypeError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"train() got unknown setting(s) {unknown}; TrainConfig fields are "
                            f"{sorted(known)}")
        return replace(base or cls(), **overrides)


def progress_enabled(progress: bool = True) -> bool:
    """tqdm bars are shown only when asked and neither ``$CI`` nor ``$TQDM_DISABLE`` is set."""
    quiet = any(os.environ.get(k, "").strip() not in ("", "0", "false", "False")
                for k in ("CI", "TQDM_DISABLE"))
    return bool(progress) and not quiet


def unwrap_ddp(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def training_step(model, batch: dict, step: int, *, pruner, optimizer, scheduler, params,
                  max_grad_norm, distillation: Distillation | None = None):
    """One optimizer step of fine-pruning (the module docstring's listing); returns
    ``(outputs, loss, task_loss, scheduled_values)``."""
    values = pruner.step(step) if pruner is not None else {}      # M, tau_t, lam_t for step t
    out = model(**batch)                                          # forward through W ⊙ M
    loss, task_loss = training_loss(out, model_inputs(batch), pruner=pruner,
                                    distillation=distillation)    # task [+ distil] + lam_t R(S)
    loss.backward()                                               # straight-through to S
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return out, loss, task_loss, values


def _start_epoch(loader, seed: int, epoch: int):
    """Fix the data order of ``epoch`` (a pure function of ``seed`` and ``epoch``)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):  # DistributedSampler
        sampler.set_epoch(epoch)
    gen = getattr(loader, "generator", None)
    if gen is not None:
        gen.manual_seed(seed + 1_000_003 * epoch)
    return iter(loader)


def _batches(loader, seed: int, start: int):
    """Endless batches from step ``start`` on, in the order an unbroken run sees them."""
    epoch, skip = divmod(start, len(loader))
    while True:
        batches = _start_epoch(loader, seed, epoch)
        for i, batch in enumerate(batches):
            if i >= skip:  # a resumed run replays the epoch's order up to its step
                yield batch
        epoch, skip = epoch + 1, 0


def train(
    model: nn.Module,
    pruner,
    loaders: dict,
    config: TrainConfig | None = None,
    *,
    epochs: float | None = None,
    total_steps: int | None = None,
    teacher: nn.Module | None = None,
    device=None,
    checkpoint_dir=None,
    on_step_end=None,
    is_main: bool = True,
    **overrides,
) -> dict:
    """Fine-tune (and prune, when ``pruner`` is given) ``model`` on ``loaders["train"]``.

    Args:
        model: a Hugging Face sequence classifier (forward returns ``.logits``), already wrapped
            by ``pruner`` if pruning; may be wrapped in ``DistributedDataParallel``.
        pruner: a :class:`mplib.Pruner` built with the same ``total_steps``, or None (dense).
        loaders: ``{"train": DataLoader, "validation": DataLoader, ...}`` of dict batches with
            ``labels`` (see :func:`mplib.lab.loaders.make_loaders`).
        config: a :class:`TrainConfig`; ``**overrides`` change single fields of it
            (``train(..., lr=3e-5)``).
        epochs / total_steps: length of training; give one (``total_steps`` wins).
        teacher: a dense teacher for distillation (``config``'s temperature and alphas).
        checkpoint_dir: where resumable checkpoints go (None: no checkpoints).
        on_step_end: optional ``fn(step, model)`` called after each optimizer step (e.g. the
            DDP score-buffer sync of :mod:`mplib.distributed`).
        is_main: only the main process writes checkpoints and shows progress bars.

    Returns:
        ``history`` dict: ``log`` (rows per log step), ``eval`` (rows per evaluation),
        ``total_steps``, ``steps_done``, ``resumed_from``, ``train_seconds``, ``step_seconds``.
    """
    cfg = TrainConfig.with_overrides(config, overrides)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    core = unwrap_ddp(model)
    steps_per_epoch = len(loaders["train"])
    if total_steps is None:
        if epochs is None:
            raise ValueError("give epochs or total_steps")
        total_steps = max(1, round(epochs * steps_per_epoch))
    if pruner is not None and pruner.total_steps != total_steps:
        raise ValueError(
            f"the pruner's schedule has total_steps={pruner.total_steps} but training runs "
            f"{total_steps} steps; build the Pruner with total_steps={total_steps}"
        )
    warmup_steps = cfg.warmup_steps(total_steps)
    optimizer, scheduler = make_optimizer(
        core, lr=cfg.lr, total_steps=total_steps, warmup_steps=warmup_steps,
        score_lr=cfg.score_lr, weight_decay=cfg.weight_decay,
        freeze_embeddings=cfg.freeze_embeddings)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    distillation = None if teacher is None else Distillation(
        teacher.to(device), temperature=cfg.temperature, alpha_distil=cfg.alpha_distil,
        alpha_task=cfg.alpha_task)

    history: dict = dict(log=[], eval=[], total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                         warmup_steps=warmup_steps, resumed_from=None)
    window = new_window()
    masks: dict = {"last": None}  # masks at the previous log step, for `regrown`
    start = 0
    ckpt_path = Path(checkpoint_dir) / ckpt_io.CHECKPOINT_NAME if checkpoint_dir else None
    if ckpt_path is not None and cfg.resume and ckpt_path.exists():
        saved = ckpt_io.restore(ckpt_path, total_steps=total_steps, model=core,
                                optimizer=optimizer, scheduler=scheduler, pruner=pruner,
                                device=device)
        history, window, start = saved["history"], saved["window"], saved["step"]
        masks["last"] = saved.get("last_masks")
        history["resumed_from"] = start

    def checkpoint(step_next: int) -> None:
        if ckpt_path is not None and is_main:
            ckpt_io.save_checkpoint(ckpt_path, ckpt_io.pack(
                step=step_next, total_steps=total_steps, model=core, optimizer=optimizer,
                scheduler=scheduler, pruner=pruner, history=history, window=window,
                last_masks=masks["last"]))

    def evaluation(step: int) -> None:
        res = evaluate(core, loaders[cfg.eval_split], device=device,
                       max_batches=cfg.eval_max_batches)
        history["eval"].append(dict(step=step, split=cfg.eval_split, **res))

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=start, desc="fine-pruning" if pruner else "fine-tuning",
               disable=not (is_main and progress_enabled(cfg.progress)), dynamic_ncols=True)
    model.train()
    batches = _batches(loaders["train"], cfg.seed, start)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    step_times = []
    step = start
    while step < total_steps:
        batch = next(batches)
        t0 = time.perf_counter()
        batch = to_device(batch, device)
        out, loss, task_loss, values = training_step(
            model, batch, step, pruner=pruner, optimizer=optimizer, scheduler=scheduler,
            params=params, max_grad_norm=cfg.max_grad_norm, distillation=distillation)
        if on_step_end is not None:
            on_step_end(step, model)
        step_times.append(time.perf_counter() - t0)

        add_to_window(window, out, loss, task_loss, batch["labels"])
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == total_steps:
            row = log_row(step, window, optimizer, pruner, values, masks)
            history["log"].append(row)
            window = new_window()
            bar.set_postfix(loss=f"{row['loss']:.3f}", kept=row.get("remaining"))
        if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps \
                and cfg.eval_split in loaders:
            evaluation(step)
        if step % cfg.checkpoint_every == 0 and step < total_steps:
            checkpoint(step)
        if cfg.stop_after is not None and cfg.stop_after <= step < total_steps:
            checkpoint(step)
            break
    bar.close()
    history["steps_done"] = step
    history["train_seconds"] = time.perf_counter() - t_start
    history["train_cpu_seconds"] = time.process_time() - cpu_start  # all threads together
    history["step_seconds"] = sum(step_times) / len(step_times) if step_times else None
    if cfg.eval_at_end and step == total_steps and cfg.eval_split in loaders:
        evaluation(step)
    return history
