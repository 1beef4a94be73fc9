"""Experiment runner: one fine-pruning run -> one small JSON result file; sweeps of many runs.

A *run* is (task, method, keep_ratio / tau / lam, scope, distillation, seed) at a *profile*
(:mod:`mplib.lab.profiles`). :func:`run_experiment` loads the data and the encoder
(:func:`prepare`, shared with the probes), wraps the model (:class:`mplib.Pruner`), trains it
with :func:`mplib.lab.train.train`, evaluates validation and test
at the final masks and writes ``<output>/<run_id>.json`` with

* ``spec``, ``config`` (the :class:`~mplib.PruningConfig`), ``profile`` (every value used);
* ``metrics``: validation / test accuracy and loss (and the teacher's, with distillation);
* ``remaining``: achieved remaining fraction of the targeted encoder weights -- global, per
  layer, per group -- and the fraction of *all* parameters left (``of_all_parameters``);
* ``schedule``: warm-up / cool-down steps and the scheduled values at the end; ``history``: the
  log rows (loss, accuracy, scheduled vs achieved sparsity over training); ``eval_history``:
  validation accuracy every ``eval_every`` steps (masks as scheduled at that step);
* ``versions`` (python, torch, transformers, datasets, mplib), ``hardware`` (platform, CPU,
  threads, CUDA device), ``wall_seconds``, ``train_seconds``, ``step_seconds``.

Method ``"dense"`` is plain fine-tuning; its model is also saved as the *teacher* of the
distillation runs of the same (task, profile, seed) under ``<cache>/teachers/`` and reused.
Runs checkpoint to ``<cache>/runs/<run_id>/`` (profile ``checkpoint_every``), so a killed run
restarted with the same command resumes where it stopped; a sweep (:mod:`mplib.lab.sweeps`)
skips every run whose result file exists, so a killed sweep restarted with the same command
finishes the rest.

Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``) every rank trains on its shard
(DistributedSampler, DDP), masks stay identical (:mod:`mplib.distributed`), only rank 0 writes.

Taught in: book/03_fine_pruning.ipynb (the runner and its result files).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import distributed as D
from ..optim import param_groups
from .anatomy import mask_anatomy, snapshot
from .env import hardware, resolve_device, seed_everything, versions, write_json
from .profiles import Profile, get_profile
from .spec import NOT_IN_RUN_ID, RunSpec, result_path, task_slug
from .teachers import TEACHER_FIELDS, load_teacher, save_teacher, teacher_dir
from .train import TrainConfig

RESULT_SCHEMA = 2  # 2: adds "anatomy" (mplib.lab.anatomy; None for dense and structured runs)
__all__ = ["NOT_IN_RUN_ID", "RESULT_KEYS", "RESULT_SCHEMA", "TEACHER_FIELDS", "RunSpec", "Setup",
           "broadcast", "build_loaders", "load_teacher", "prepare", "result_path",
           "run_experiment", "schedule_steps", "task_slug", "teacher_dir", "train_config"]

RESULT_KEYS = ("run_id", "schema", "spec", "config", "profile", "train", "metrics", "remaining",
               "anatomy", "schedule", "history", "eval_history", "distillation", "versions",
               "hardware", "wall_seconds", "train_seconds", "train_cpu_seconds", "step_seconds",
               "resumed_from")
"""Top-level keys of every result file."""


def broadcast(value):
    """Rank 0's ``value`` on every rank (so all ranks take the same branch)."""
    if D.world_size() == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def build_loaders(task: str, tokenizer, profile: Profile, seed: int) -> tuple[dict, list[str]]:
    """Train loader (sharded under DDP) and validation/test loaders, plus the label names."""
    from .data import load_task
    from .loaders import make_loaders, tokenize_task

    dsd = load_task(task, seed=seed, max_train=profile.max_train)
    labels = dsd["train"].features["label"].names
    if profile.max_eval is not None:
        for split in ("validation", "test"):
            dsd[split] = dsd[split].select(range(min(profile.max_eval, len(dsd[split]))))
    tok = tokenize_task(dsd, tokenizer, max_length=profile.max_length)
    loaders = make_loaders(type(tok)({k: tok[k] for k in ("validation", "test")}), tokenizer,
                           profile.eval_batch_size, seed)
    loaders.update(make_loaders(type(tok)(train=tok["train"]), tokenizer, profile.batch_size,
                                seed, world_size=D.world_size(), rank=D.rank()))
    return loaders, labels


@dataclass
class Setup:
    """What every experiment starts from: the resolved profile, device, data and model."""

    profile: Profile
    device: torch.device
    tokenizer: object
    loaders: dict
    labels: list
    model: torch.nn.Module
    distributed: bool = False


def prepare(task: str, profile: Profile, seed: int, *, method: str | None = None) -> Setup:
    """Device (joining torchrun's process group if there is one), threads, tokenizer, loaders
    and a freshly headed encoder on the device; ``method`` is checked for DDP support."""
    from transformers import AutoTokenizer

    from .models import encoder_path, load_encoder

    device = resolve_device(profile.device)
    distributed = D.init_from_env(device.type)
    device = D.device_for_rank(device.type)
    if distributed and method not in (None, "dense"):
        D.check_supported(method)
    if profile.threads:
        torch.set_num_threads(profile.threads)
    tokenizer = AutoTokenizer.from_pretrained(profile.model or encoder_path())
    loaders, labels = build_loaders(task, tokenizer, profile, seed)
    model, _ = load_encoder(profile.model, num_labels=len(labels), num_layers=profile.num_layers,
                            seed=seed, pooling=profile.pooling)
    return Setup(profile=profile, device=device, tokenizer=tokenizer, loaders=loaders,
                 labels=labels, model=model.to(device), distributed=distributed)


def schedule_steps(profile: Profile, steps_per_epoch: int) -> tuple[int, int, int]:
    """``(total_steps, warmup_steps, cooldown_steps)`` of a run at ``profile``."""
    total = max(1, round(profile.epochs * steps_per_epoch))
    return total, round(profile.warmup_frac * total), round(profile.cooldown_frac * total)


def train_config(profile: Profile, **overrides) -> TrainConfig:
    """The :class:`~mplib.lab.train.TrainConfig` of ``profile`` (rates, distillation, logging),
    with ``overrides``; runs are evaluated by the runner after training (``eval_at_end`` off)."""
    p = profile
    fields_ = dict(lr=p.lr, score_lr=p.score_lr, weight_decay=p.weight_decay,
                   freeze_embeddings=p.freeze_embeddings, temperature=p.temperature,
                   alpha_distil=p.alpha_distil, alpha_task=p.alpha_task, log_every=p.log_every,
                   eval_every=p.eval_every, eval_at_end=False)
    fields_.update(overrides)
    return TrainConfig(**fields_)


def _per_weight_scores(model: torch.nn.Module) -> bool:
    """True when every masked layer has no scores or one score per weight."""
    from ..surgery import masked_layers

    return all(lay.scores is None or lay.scores.shape == lay.weight.shape
               for lay in masked_layers(model).values())


def run_experiment(spec: RunSpec, profile: Profile | str = "ci", *, output="results/runs",
                   cache_dir="results/cache", progress: bool = True, resume: bool = True,
                   skip_existing: bool = True) -> dict:
    """Run ``spec`` at ``profile`` and write its result JSON (rank 0); returns the result dict.

    With ``skip_existing`` an existing result file is read back instead of running again.
    """
    t_wall = time.perf_counter()
    base = get_profile(profile) if isinstance(profile, str) else profile
    prof = base.with_overrides(**spec.overrides) if spec.overrides else base
    config = spec.pruning_config()  # validate before any heavy work
    out_path = result_path(spec, base.name, output)
    if skip_existing and broadcast(out_path.exists()):
        return json.loads(out_path.read_text())

    from ..pruner import Pruner
    from .train import evaluate, train

    setup = prepare(spec.task, prof, spec.seed, method=spec.method)
    model, loaders, labels, device = setup.model, setup.loaders, setup.labels, setup.device
    teacher, teacher_info = None, None
    if spec.distill:
        teacher, teacher_info = load_teacher(spec, base, output=output, cache_dir=cache_dir,
                                             progress=progress)
    steps_per_epoch = len(loaders["train"])
    total, warm, cool = schedule_steps(prof, steps_per_epoch)
    pruner = None
    if config is not None:
        pruner = Pruner(model, config, total_steps=total, warmup_steps=warm, cooldown_steps=cool)
        pretrained = snapshot(model)  # for the anatomy of the final masks (C8-C10)
    if prof.freeze_embeddings:  # before DDP, which records the parameters that need gradients
        param_groups(model, lr=prof.lr, freeze_embeddings=True)
    seed_everything(spec.seed)
    net = D.wrap_ddp(model, device) if setup.distributed else model
    rid = spec.run_id(base.name)
    ckpt_dir = Path(cache_dir) / "runs" / rid if prof.checkpoint_every else None
    history = train(
        net, pruner, loaders, train_config(prof, warmup=warm, progress=progress, resume=resume,
                                           seed=spec.seed,
                                           checkpoint_every=prof.checkpoint_every or total + 1),
        total_steps=total, teacher=teacher, device=device, checkpoint_dir=ckpt_dir,
        on_step_end=(lambda step, m: D.sync_score_buffers(m)) if setup.distributed else None,
        is_main=D.is_main(),
    )
    t_eval = time.perf_counter()
    metrics = {split: evaluate(model, loaders[split], device=device)
               for split in ("validation", "test")}
    eval_seconds = time.perf_counter() - t_eval
    if teacher is not None:
        metrics["teacher"] = teacher_info["metrics"]
    if pruner is not None:
        pruner.step(total - 1)  # the masks the final step used (what was just evaluated)
        rep = pruner.report()
        remaining = {k: rep[k] for k in ("global", "per_layer", "per_group", "of_all_parameters",
                                         "targeted_weights", "kept_weights", "all_parameters")}
        remaining["per_layer"] = {str(k): v for k, v in rep["per_layer"].items()}
        remaining["per_matrix"] = rep["per_matrix"]
        sched = dict(final=pruner.values_at(total - 1))
        # mask_anatomy samples scores at weight positions: structured methods (one score per
        # block / head / neuron) have no per-weight score, so their runs record no anatomy
        anatomy = (mask_anatomy(model, pretrained, seed=spec.seed)
                   if _per_weight_scores(model) else None)
    else:  # dense: nothing pruned
        remaining = {"global": 1.0, "per_layer": None, "per_group": None,
                     "of_all_parameters": 1.0,
                     "all_parameters": sum(p.numel() for p in model.parameters())}
        sched = dict(final=None)
        anatomy = None
    sched.update(total_steps=total, warmup_steps=warm, cooldown_steps=cool,
                 pruning_steps=total - warm - cool, steps_per_epoch=steps_per_epoch)
    result = dict(
        run_id=rid,
        schema=RESULT_SCHEMA,
        spec={k: v for k, v in asdict(spec).items()},
        config=None if config is None else config.to_dict(),
        profile=prof.to_dict(),
        train=dict(total_steps=total, steps_per_epoch=steps_per_epoch, epochs=prof.epochs,
                   batch_size=prof.batch_size, world_size=D.world_size(),
                   train_examples=len(loaders["train"].dataset), labels=labels,
                   eval_seconds=eval_seconds),
        metrics=metrics,
        remaining=remaining,
        anatomy=anatomy,
        schedule=sched,
        history=history["log"],
        eval_history=history["eval"],
        distillation=None if teacher is None else dict(
            teacher=teacher_info["run_id"], temperature=prof.temperature,
            alpha_distil=prof.alpha_distil, alpha_task=prof.alpha_task),
        versions=versions(),
        hardware=hardware(device),
        wall_seconds=time.perf_counter() - t_wall,
        train_seconds=history["train_seconds"],
        train_cpu_seconds=history["train_cpu_seconds"],
        step_seconds=history["step_seconds"],
        resumed_from=history["resumed_from"],
    )
    if D.is_main():
        if spec.method == "dense" and not spec.distill:
            where = teacher_dir(cache_dir, spec.task, prof, spec.seed)
            save_teacher(model, setup.tokenizer, where,
                          dict(run_id=rid, metrics=metrics, num_labels=len(labels),
                               profile=prof.to_dict()))
        write_json(out_path, result)
        if ckpt_dir is not None:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    D.barrier()
    return result
