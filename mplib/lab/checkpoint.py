"""Resumable runs: one atomic checkpoint file with everything a run needs to continue exactly.

A checkpoint holds the model, optimizer and LR-scheduler states, every random generator's state
(torch, CUDA, Python, NumPy), the pruner's last scheduled values and global budgets, the history
so far and the next step. It is written to ``<dir>/checkpoint.pt.tmp`` and renamed over
``<dir>/checkpoint.pt`` (``os.replace`` is atomic), so a kill never leaves half a file.

Loading is safe against files mplib did not write. A checkpoint holds Python objects (RNG
states, the history dicts), but only tensors and plain containers -- lists, tuples, dicts,
strings, numbers, None -- so :func:`load_checkpoint` reads it with ``torch.load(...,
weights_only=True)``: torch's restricted unpickler, which builds those and nothing else and
never runs code named by the file. The NumPy RNG state is stored as a plain list; checkpoints
written before that hold a NumPy array, so the four NumPy names that rebuild a uint32 array
(``ndarray``, ``dtype``, its uint32 class and the array rebuild function) are allowed as well.
A file that is not a checkpoint, or one that asks for anything else, is refused with a
``ValueError`` before anything is restored: every checkpoint carries
``format="mplib.lab.checkpoint"`` (older ones are recognised by their full set of keys).

Used by: :func:`mplib.lab.train.train`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "mplib.lab.checkpoint"
FORMAT_VERSION = 1
_KEYS = ("step", "total_steps", "model", "optimizer", "scheduler", "rng", "history", "window",
         "last_masks", "pruner")


def rng_state() -> dict:
    """Every random generator's state."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = (name, keys.tolist(), int(pos), int(has_gauss), float(cached))
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
        format=FORMAT, format_version=FORMAT_VERSION,
        step=step, total_steps=total_steps, model=model.state_dict(),
        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=rng_state(),
        history=history, window=window, last_masks=last_masks,
        pruner=None if pruner is None else dict(
            state=dict(pruner.state), budgets=[layer.budget for layer in pruner.layers]),
    )


def _legacy_numpy_globals() -> list:
    """What a NumPy array in an older checkpoint's RNG state needs to be rebuilt, nothing more."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return []
    return [np.ndarray(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: Path, device="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` -- and refuse anything else.

    Uses ``torch.load(weights_only=True)`` (see the module docstring), so a file from elsewhere
    cannot run code; a ``ValueError`` names the problem if it is not an mplib checkpoint.
    """
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        with allow(_legacy_numpy_globals()) if allow else contextlib.nullcontext():
            ckpt = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        why = next((line for line in lines if any(
            w in line for w in ("GLOBAL", "Unsupported", "Can only build"))),
            lines[0] if lines else type(e).__name__)
        raise ValueError(f"{path} is not an mplib training checkpoint that can be loaded safely "
                         f"(torch.load with weights_only=True refused it: {why}); delete it "
                         "or use another checkpoint_dir") from None
    legacy = isinstance(ckpt, dict) and "format" not in ckpt and all(k in ckpt for k in _KEYS)
    if not legacy and not (isinstance(ckpt, dict) and ckpt.get("format") == FORMAT):
        raise ValueError(f"{path} is not an mplib training checkpoint (no format={FORMAT!r} "
                         "marker); delete it or use another checkpoint_dir")
    version = ckpt.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} is checkpoint format version {version!r}; this mplib reads "
                         f"version {FORMAT_VERSION}")
    return ckpt


def restore(path: Path, *, total_steps: int, model, optimizer, scheduler, pruner,
            device) -> dict:
    """Load ``path`` into the given objects; returns the payload (history, window, step...)."""
    ckpt = load_checkpoint(path, device)
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
