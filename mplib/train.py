"""The training loop the book reads: fine-pruning, one optimizer step at a time (paper §3-6).

One step ``t`` (0-based, ``T = total_steps`` optimizer updates) of :func:`train`::

    pruner.step(t)                             # masks for step t: M = Top_v_t(S), tau_t, lam_t
    z = model(x)                                     # forward through W' = W ⊙ M
    L = CE(z, y)                                     # task loss
    L = a_distil * T^2 * KL(softmax(z_teacher / T) || softmax(z / T)) + a_task * L   (teacher)
    L = L + lam_t * R(S)                             # pruner.penalty(): soft movement, L0
    L.backward()                                     # straight-through: dL/dS = dL/dW' ⊙ W
    clip ||grad||_2 <= 1                             # over weights and scores together
    AdamW step: weights at lr_t, scores at score_lr_t (no weight decay on scores)
    lr_t = lr * min((t + 1) / warmup, (T - t) / (T - warmup))        # linear warm-up, then decay

Every ``log_every`` steps the history gets the mean loss and accuracy of the window, ``lr_t``,
the *scheduled* ``keep_ratio_t`` / ``tau_t`` / ``lam_t`` and the *achieved* remaining fraction
(global and per layer) measured from the masks themselves -- the two must agree for Top_v
methods, and for the threshold methods the gap between them is the lesson. ``regrown`` is the
fraction of targeted weights pruned at the previous log step and kept now: the schedule only
removes weights, so everything in it is mask churn (scores overtaking each other).

Checkpoint and resume. Every ``checkpoint_every`` steps the loop writes model, optimizer,
lr-scheduler, RNG states, the pruner's last scheduled values and global budgets, the history and
the step, to ``checkpoint_dir/checkpoint.pt`` atomically (temporary file, then ``os.replace``).
The schedule is a pure function of the step and the data order of epoch ``e`` comes from a
generator re-seeded to ``seed + 1_000_003 * e``, so a killed run resumes at the same step with
the same schedule values, batches and masks, and ends bit-for-bit where an uninterrupted run ends.

Taught in: book/03_fine_pruning.ipynb (the loop); the teacher term in a later distillation
chapter.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import torch
from torch import nn

from .distill import distillation_loss
from .optim import param_groups

CHECKPOINT_NAME = "checkpoint.pt"


def progress_enabled(progress: bool = True) -> bool:
    """tqdm bars are shown only when asked and neither ``$CI`` nor ``$TQDM_DISABLE`` is set."""
    quiet = any(os.environ.get(k, "").strip() not in ("", "0", "false", "False")
                for k in ("CI", "TQDM_DISABLE"))
    return bool(progress) and not quiet


def linear_warmup_decay(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: ``(t+1)/warmup`` while warming up, then linear decay to 0 at ``T``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def unwrap_ddp(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _to(batch: dict, device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("labels", "label")}


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, device=None, max_batches: int | None = None) -> dict:
    """Accuracy and mean cross-entropy of ``model`` on ``loader`` (eval mode, masks as now).

    Returns ``dict(accuracy=..., loss=..., examples=...)``; the model's train/eval mode is restored.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = _to(batch, device)
        logits = model(**_inputs(batch)).logits
        labels = batch["labels"]
        loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
        total += labels.numel()
    model.train(was_training)
    return dict(accuracy=correct / max(total, 1), loss=loss_sum / max(total, 1), examples=total)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover
        pass
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


def save_checkpoint(path: Path, payload: dict) -> None:
    """``torch.save`` to ``path.tmp``, then atomically rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _start_epoch(loader, seed: int, epoch: int):
    """Fix the data order of ``epoch`` (a pure function of ``seed`` and ``epoch``)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):  # DistributedSampler
        sampler.set_epoch(epoch)
    gen = getattr(loader, "generator", None)
    if gen is not None:
        gen.manual_seed(seed + 1_000_003 * epoch)
    return iter(loader)


def train(
    model: nn.Module,
    pruner,
    loaders: dict,
    *,
    epochs: float | None = None,
    total_steps: int | None = None,
    lr: float = 1e-4,
    score_lr: float = 1e-2,
    weight_decay: float = 0.0,
    warmup: int | float = 0.1,
    freeze_embeddings: bool = False,
    max_grad_norm: float = 1.0,
    teacher: nn.Module | None = None,
    temperature: float = 2.0,
    alpha_distil: float = 0.9,
    alpha_task: float = 0.1,
    log_every: int = 50,
    eval_every: int | None = None,
    eval_split: str = "validation",
    eval_max_batches: int | None = None,
    eval_at_end: bool = True,
    device=None,
    progress: bool = True,
    checkpoint_dir=None,
    checkpoint_every: int = 200,
    resume: bool = True,
    stop_after: int | None = None,
    seed: int = 0,
    on_step_end=None,
    is_main: bool = True,
) -> dict:
    """Fine-tune (and prune, when ``pruner`` is given) ``model`` on ``loaders["train"]``.

    Args:
        model: a Hugging Face sequence classifier (forward returns ``.logits``), already wrapped
            by ``pruner`` if pruning; may be wrapped in ``DistributedDataParallel``.
        pruner: a :class:`mplib.Pruner` built with the same ``total_steps``, or None (dense).
        loaders: ``{"train": DataLoader, "validation": DataLoader, ...}`` of dict batches with
            ``labels`` (see :func:`mplib.data.make_loaders`).
        epochs / total_steps: length of training; give one (``total_steps`` wins).
        lr, score_lr, weight_decay: AdamW rates; scores in their own group without decay
            (:func:`mplib.param_groups`).
        warmup: LR warm-up steps (an int) or fraction of ``total_steps`` (a float < 1).
        teacher, temperature, alpha_distil, alpha_task: distillation (paper §6: 0.9 / 0.1, T=2).
        log_every, eval_every: history rows every so many steps; evaluations on
            ``loaders[eval_split]`` every ``eval_every`` steps (None: none during training) and,
            with ``eval_at_end``, after the last step.
        checkpoint_dir, checkpoint_every, resume: see the module docstring.
        stop_after: stop (after checkpointing) once this many steps are done -- simulates a kill.
        seed: base seed of the data order.
        on_step_end: optional ``fn(step, model)`` called after each optimizer step (e.g. the
            DDP score-buffer sync of :mod:`mplib.distributed`).
        is_main: only the main process writes checkpoints and shows progress bars.

    Returns:
        ``history`` dict: ``log`` (rows per log step), ``eval`` (rows per evaluation),
        ``total_steps``, ``steps_done``, ``resumed_from``, ``train_seconds``, ``step_seconds``.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    core = unwrap_ddp(model)
    train_loader = loaders["train"]
    steps_per_epoch = len(train_loader)
    if total_steps is None:
        if epochs is None:
            raise ValueError("give epochs or total_steps")
        total_steps = max(1, round(epochs * steps_per_epoch))
    if pruner is not None and pruner.total_steps != total_steps:
        raise ValueError(
            f"the pruner's schedule has total_steps={pruner.total_steps} but training runs "
            f"{total_steps} steps; build the Pruner with total_steps={total_steps}"
        )
    warmup_steps = int(round(warmup * total_steps)) if isinstance(warmup, float) and warmup < 1 \
        else int(warmup)

    groups = param_groups(core, lr=lr, score_lr=score_lr, weight_decay=weight_decay,
                          freeze_embeddings=freeze_embeddings)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda t: linear_warmup_decay(t, warmup_steps=warmup_steps, total_steps=total_steps),
    )
    params = [p for g in groups for p in g["params"]]
    if teacher is not None:
        teacher.to(device).eval()

    history: dict = dict(log=[], eval=[], total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                         warmup_steps=warmup_steps, resumed_from=None)
    window = dict(loss=0.0, objective=0.0, correct=0, seen=0, n=0)
    masks: dict = {"last": None}  # masks at the previous log step, for `regrown`
    start = 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt["total_steps"] != total_steps:
            raise ValueError(f"checkpoint {ckpt_path} is for total_steps={ckpt['total_steps']}, "
                             f"not {total_steps}; delete it or use another checkpoint_dir")
        core.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        history, window, start = ckpt["history"], ckpt["window"], ckpt["step"]
        masks["last"] = ckpt.get("last_masks")
        history["resumed_from"] = start
        if pruner is not None:  # the values step `start - 1` left behind, as in an unbroken run
            pruner.state = ckpt["pruner"]["state"]
            for layer, budget in zip(pruner.layers, ckpt["pruner"]["budgets"], strict=True):
                layer.budget = budget

    def checkpoint(step_next: int) -> None:
        if ckpt_path is None or not is_main:
            return
        save_checkpoint(ckpt_path, dict(
            step=step_next, total_steps=total_steps, model=core.state_dict(),
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=_rng_state(),
            history=history, window=window, last_masks=masks["last"],
            pruner=None if pruner is None else dict(
                state=dict(pruner.state), budgets=[layer.budget for layer in pruner.layers]),
        ))

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=start, desc="fine-pruning" if pruner else "fine-tuning",
               disable=not (is_main and progress_enabled(progress)), dynamic_ncols=True)
    model.train()
    epoch, skip = divmod(start, steps_per_epoch)
    batches = _start_epoch(train_loader, seed, epoch)
    for _ in range(skip):  # same batches as the unbroken run: replay the epoch's order
        next(batches)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    step_times = []
    step = start
    while step < total_steps:
        try:
            batch = next(batches)
        except StopIteration:
            epoch += 1
            batches = _start_epoch(train_loader, seed, epoch)
            continue
        t0 = time.perf_counter()
        batch = _to(batch, device)
        values = pruner.step(step) if pruner is not None else {}

        out = model(**batch)
        loss = task_loss = out.loss
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(**_inputs(batch)).logits
            loss = distillation_loss(out.logits, teacher_logits, task_loss,
                                     temperature=temperature, alpha_distil=alpha_distil,
                                     alpha_task=alpha_task)
        if pruner is not None and values.get("lam"):
            loss = loss + pruner.penalty()
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if on_step_end is not None:
            on_step_end(step, model)
        step_times.append(time.perf_counter() - t0)

        window["loss"] += float(task_loss.detach())
        window["objective"] += float(loss.detach())
        window["correct"] += int((out.logits.detach().argmax(-1) == batch["labels"]).sum())
        window["seen"] += int(batch["labels"].numel())
        window["n"] += 1
        step += 1
        bar.update(1)
        if step % log_every == 0 or step == total_steps:
            row = _log_row(step, window, optimizer, pruner, values, masks)
            history["log"].append(row)
            window = dict(loss=0.0, objective=0.0, correct=0, seen=0, n=0)
            bar.set_postfix(loss=f"{row['loss']:.3f}", kept=row.get("remaining"))
        if eval_every and step % eval_every == 0 and step < total_steps and eval_split in loaders:
            res = evaluate(core, loaders[eval_split], device=device, max_batches=eval_max_batches)
            history["eval"].append(dict(step=step, split=eval_split, **res))
        if step % checkpoint_every == 0 and step < total_steps:
            checkpoint(step)
        if stop_after is not None and step >= stop_after and step < total_steps:
            checkpoint(step)
            break
    bar.close()
    history["steps_done"] = step
    history["train_seconds"] = time.perf_counter() - t_start
    history["train_cpu_seconds"] = time.process_time() - cpu_start  # all threads together
    history["step_seconds"] = sum(step_times) / len(step_times) if step_times else None
    if eval_at_end and step == total_steps and eval_split in loaders:
        res = evaluate(core, loaders[eval_split], device=device, max_batches=eval_max_batches)
        history["eval"].append(dict(step=step, split=eval_split, **res))
    return history


def _log_row(step: int, window: dict, optimizer, pruner, values: dict, masks: dict) -> dict:
    """One history row: window means, learning rates, scheduled and achieved sparsity, churn."""
    n = max(window["n"], 1)
    row = dict(step=step, loss=window["loss"] / n, objective=window["objective"] / n,
               accuracy=window["correct"] / max(window["seen"], 1))
    for g in optimizer.param_groups:
        row[f"lr_{g.get('name', 'group')}"] = g["lr"]
    if pruner is not None:
        for key in ("keep_ratio", "tau", "lam"):
            if key in values:
                row[key] = values[key]
        rep = pruner.report()
        row["remaining"] = rep["global"]
        row["remaining_per_layer"] = {str(k): v for k, v in rep["per_layer"].items()}
        row["of_all_parameters"] = rep["of_all_parameters"]
        now = [layer.mask().bool() for layer in pruner.layers]
        if masks["last"] is not None:
            regrown = sum(int((m & ~old).sum()) for m, old in zip(now, masks["last"], strict=True))
            row["regrown"] = regrown / rep["targeted_weights"]
        masks["last"] = now
    if not math.isfinite(row["objective"]):
        raise FloatingPointError(f"loss is not finite at step {step}: {row['objective']}")
    return row
