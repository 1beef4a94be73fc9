"""What the training loop records: one history row per ``log_every`` steps.

Every ``log_every`` steps the history gets the mean loss and accuracy of the window, ``lr_t``,
the *scheduled* ``keep_ratio_t`` / ``tau_t`` / ``lam_t`` and the *achieved* remaining fraction
(global and per layer) measured from the masks themselves -- the two must agree for Top_v
methods, and for the threshold methods the gap between them is the lesson. ``regrown`` is the
fraction of targeted weights pruned at the previous log step and kept now: the schedule only
removes weights, so everything in it is mask churn (scores overtaking each other).

Used by: :func:`mplib.lab.train.train`; the rows land in every result file's ``history``.
"""

from __future__ import annotations

import math

__all__ = ["add_to_window", "log_row", "new_window"]


def new_window() -> dict:
    """Empty sums for the next logging window."""
    return dict(loss=0.0, objective=0.0, correct=0, seen=0, n=0)


def add_to_window(window: dict, out, loss, task_loss, labels) -> None:
    """Add one step's loss, objective and correct predictions to the window."""
    window["loss"] += float(task_loss.detach())
    window["objective"] += float(loss.detach())
    window["correct"] += int((out.logits.detach().argmax(-1) == labels).sum())
    window["seen"] += int(labels.numel())
    window["n"] += 1


def log_row(step: int, window: dict, optimizer, pruner, values: dict, masks: dict) -> dict:
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
