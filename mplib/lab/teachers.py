"""The dense teachers of distillation runs, fine-tuned once and cached on disk.

A distillation run at (task, profile, seed) needs the dense model fine-tuned with the same
recipe. :func:`load_teacher` looks for it under ``<cache>/teachers/`` (:func:`teacher_dir`: the
name holds a hash of the recipe's :data:`TEACHER_FIELDS`, so a changed recipe trains a new
teacher) and runs the dense experiment first when it is missing.

Used by: :func:`mplib.lab.runner.run_experiment`.

Taught in: book/07_schedules_and_distillation.ipynb (where a distillation run's teacher
comes from).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from .. import distributed as D
from .env import write_json
from .profiles import Profile
from .spec import RunSpec, task_slug

__all__ = ["TEACHER_FIELDS", "load_teacher", "save_teacher", "teacher_dir"]

TEACHER_FIELDS = ("model", "num_layers", "max_train", "max_length", "batch_size", "epochs", "lr",
                  "weight_decay", "warmup_frac", "freeze_embeddings")
"""Profile fields that define the dense teacher (a change trains a new teacher)."""

def teacher_dir(cache_dir: Path, task: str, profile: Profile, seed: int) -> Path:
    """``<cache>/teachers/<task>-<profile>-seed<seed>-<hash of the teacher's recipe>``."""
    recipe = {k: getattr(profile, k) for k in TEACHER_FIELDS}
    if profile.pooling != "cls":  # keeps the hashes of the [CLS] teachers cached before it
        recipe["pooling"] = profile.pooling
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]
    return Path(cache_dir) / "teachers" / f"{task_slug(task)}-{profile.name}-seed{seed}-{digest}"


def load_teacher(spec: RunSpec, profile: Profile, *, output: Path, cache_dir: Path,
                 progress: bool) -> tuple[torch.nn.Module, dict]:
    """The cached dense teacher of (task, profile, seed); fine-tuned first if missing."""
    from .models import load_encoder

    resolved = profile.with_overrides(**spec.overrides) if spec.overrides else profile
    where = teacher_dir(cache_dir, spec.task, resolved, spec.seed)
    from .runner import broadcast, run_experiment  # the dense run is an ordinary run

    if not broadcast((where / "teacher.json").exists()):
        dense = RunSpec(task=spec.task, method="dense", seed=spec.seed,
                        overrides={k: v for k, v in spec.overrides.items()
                                   if k in TEACHER_FIELDS or k == "pooling"})
        run_experiment(dense, profile, output=output, cache_dir=cache_dir, progress=progress,
                       skip_existing=False)
        D.barrier()
    info = json.loads((where / "teacher.json").read_text())
    model, _ = load_encoder(where, num_labels=info["num_labels"])  # head included
    return model.eval(), info


@contextlib.contextmanager
def _no_hf_bars():
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def save_teacher(model, tokenizer, where: Path, info: dict) -> None:
    """A complete Hugging Face checkpoint folder (model + tokenizer) plus ``teacher.json``."""
    tmp = where.with_name(where.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with _no_hf_bars():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    write_json(tmp / "teacher.json", info)
    shutil.rmtree(where, ignore_errors=True)
    os.replace(tmp, where)
