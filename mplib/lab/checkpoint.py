"""Resumable runs: one atomic checkpoint file with everything a run needs to continue exactly.

A checkpoint holds the model, optimizer and LR-scheduler states, every random generator's state
(torch, CUDA, Python, NumPy), the pruner's last scheduled values and global budgets, the history
so far and the next step. It is written to ``<dir>/checkpoint.pt.tmp`` and renamed over
``<dir>/checkpoint.pt`` (``os.replace`` is atomic), so a kill never leaves half a file.

Checkpoints are our own files, read back with ``weights_only=False`` (they hold Python RNG
states and history dicts); never load a checkpoint you did not write.

Used by: :func:`mplib.lab.train.train`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict:
    """Every random generator's state."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover
        pass
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
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


def pack(*, step: int, total_steps: int, model, optimizer, scheduler, pruner, history: dict,
         window: dict, last_masks) -> dict:
    """The checkpoint payload of a run about to do ``step``."""
    return dict(
        step=step, total_steps=total_steps, model=model.state_dict(),
        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=rng_state(),
        history=history, window=window, last_masks=last_masks,
        pruner=None if pruner is None else dict(
            state=dict(pruner.state), budgets=[layer.budget for layer in pruner.layers]),
    )


def restore(path: Path, *, total_steps: int, model, optimizer, scheduler, pruner,
            device) -> dict:
    """Load ``path`` into the given objects; returns the payload (history, window, step...)."""
    ckpt = torch.load(path, map_location=device, weights_only=False)  # our own file, see above
    if ckpt["total_steps"] != total_steps:
        raise ValueError(f"checkpoint {path} is for total_steps={ckpt['total_steps']}, "
                         f"not {total_steps}; delete it or use another checkpoint_dir")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    if pruner is not None:  # the values step `start - 1` left behind, as in an unbroken run
        pruner.state = ckpt["pruner"]["state"]
        for layer, budget in zip(pruner.layers, ckpt["pruner"]["budgets"], strict=True):
            layer.budget = budget
    return ckpt
