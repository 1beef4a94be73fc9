"""Experiment runner: one fine-pruning run -> one small JSON result file; sweeps of many runs.

A *run* is (task, method, keep_ratio / tau / lam, scope, distillation, seed) at a *profile*
(:mod:`mplib.profiles`). :func:`run_experiment` loads the data and the encoder, wraps the model
(:class:`mplib.Pruner`), trains it with :func:`mplib.train.train`, evaluates validation and test
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
restarted with the same command resumes where it stopped; a sweep skips every run whose result
file exists, so a killed sweep restarted with the same command finishes the rest.

Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``) every rank trains on its shard
(DistributedSampler, DDP), masks stay identical (:mod:`mplib.distributed`), only rank 0 writes.

Taught in: book/03_fine_pruning.ipynb (the runner and its result files).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import distributed as D
from .config import METHODS, PruningConfig
from .optim import param_groups
from .profiles import Profile, get_profile

RESULT_SCHEMA = 1
TEACHER_FIELDS = ("model", "num_layers", "max_train", "max_length", "batch_size", "epochs", "lr",
                  "weight_decay", "warmup_frac", "freeze_embeddings")
"""Profile fields that define the dense teacher (a change trains a new teacher)."""

NOT_IN_RUN_ID = ("threads", "device", "checkpoint_every", "log_every", "eval_every",
                 "eval_batch_size", "seeds")
"""Profile fields left out of a run's name, as they change how a run executes, not its result."""

RESULT_KEYS = ("run_id", "schema", "spec", "config", "profile", "train", "metrics", "remaining",
               "schedule", "history", "eval_history", "distillation", "versions", "hardware",
               "wall_seconds", "train_seconds", "train_cpu_seconds", "step_seconds",
               "resumed_from")
"""Top-level keys of every result file."""


def task_slug(task: str) -> str:
    """A task name safe in file names: a local folder's own name, ``/`` and ``:`` as ``_``."""
    name = Path(task).name if Path(task).exists() else task
    return name.replace("/", "_").replace(":", "_")


@dataclass
class RunSpec:
    """What one run prunes and how (the profile says at what scale).

    Attributes:
        task: ``"rt"``, ``"bbc"`` or any name :func:`mplib.data.load_task` accepts.
        method: a :data:`mplib.METHODS` name, or ``"dense"`` (fine-tuning, no pruning).
        keep_ratio, tau, lam, scope: as in :class:`mplib.PruningConfig`.
        distill: distil from the cached dense teacher (alpha_distil 0.9, alpha_task 0.1, T 2).
        seed: seeds the head, dropout, data order, training subsample and random scores.
        overrides: profile fields changed for this run (e.g. ``{"epochs": 8}``).
    """

    task: str = "rt"
    method: str = "movement"
    keep_ratio: float | None = None
    tau: float | None = None
    lam: float | None = None
    scope: str = "local"
    distill: bool = False
    seed: int = 0
    overrides: dict = field(default_factory=dict)

    def pruning_config(self) -> PruningConfig | None:
        """The validated :class:`PruningConfig` (None for ``dense``); errors say what is wrong."""
        if self.method == "dense":
            given = [k for k in ("keep_ratio", "tau", "lam") if getattr(self, k) is not None]
            if given or self.scope != "local":
                raise ValueError(f"method 'dense' does not prune, so {given or ['scope']} "
                                 "does not apply")
            return None
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose dense or one of "
                             f"{sorted(METHODS)}")
        return PruningConfig(method=self.method, keep_ratio=self.keep_ratio, tau=self.tau,
                             lam=self.lam, scope=self.scope, seed=self.seed)

    def run_id(self, profile_name: str) -> str:
        parts = [profile_name, task_slug(self.task), self.method]
        for key in ("keep_ratio", "tau", "lam"):
            v = getattr(self, key)
            if v is not None:
                parts.append(f"{ {'keep_ratio': 'keep'}.get(key, key)}{v:g}")
        if self.scope != "local":
            parts.append(self.scope)
        if self.distill:
            parts.append("distil")
        parts.append(f"seed{self.seed}")
        rid = "-".join(parts)
        for k in sorted(set(self.overrides) - set(NOT_IN_RUN_ID)):
            rid += f"+{k}{_short(self.overrides[k])}"
        return rid


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "_".join(_short(x) for x in v)
    return str(v).replace("/", "_")


# ----------------------------------------------------------------------------- environment
def versions() -> dict:
    import datasets
    import transformers

    from . import __version__

    return dict(python=platform.python_version(), torch=torch.__version__,
                transformers=transformers.__version__, datasets=datasets.__version__,
                mplib=__version__)


def hardware(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    out = dict(platform=platform.platform(), machine=platform.machine(), cpu=cpu,
               cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
               device=str(device), world_size=D.world_size(), cuda_device=None)
    if device.type == "cuda":
        out["cuda_device"] = torch.cuda.get_device_name(device)
    return out


def resolve_device(profile: Profile) -> torch.device:
    kind = profile.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("profile asks for device='cuda' but no CUDA device is available")
    return D.device_for_rank(kind)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _broadcast(value):
    """Rank 0's ``value`` on every rank (so all ranks take the same branch)."""
    if D.world_size() == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


# ----------------------------------------------------------------------------- data, teacher
def build_loaders(task: str, tokenizer, profile: Profile, seed: int) -> tuple[dict, list[str]]:
    """Train loader (sharded under DDP) and validation/test loaders, plus the label names."""
    from .data import load_task, make_collator, make_loaders, tokenize_task

    dsd = load_task(task, seed=seed, max_train=profile.max_train)
    labels = dsd["train"].features["label"].names
    if profile.max_eval is not None:
        for split in ("validation", "test"):
            dsd[split] = dsd[split].select(range(min(profile.max_eval, len(dsd[split]))))
    tok = tokenize_task(dsd, tokenizer, max_length=profile.max_length)
    loaders = make_loaders(type(tok)({k: tok[k] for k in ("validation", "test")}), tokenizer,
                           profile.eval_batch_size, seed)
    n = D.world_size()
    if n == 1:
        loaders["train"] = make_loaders(type(tok)(train=tok["train"]), tokenizer,
                                        profile.batch_size, seed)["train"]
    else:
        if profile.batch_size % n:
            raise ValueError(f"batch_size {profile.batch_size} is not divisible by "
                             f"{n} processes")
        sampler = torch.utils.data.DistributedSampler(
            tok["train"], num_replicas=n, rank=D.rank(), shuffle=True, seed=seed)
        loaders["train"] = torch.utils.data.DataLoader(
            tok["train"], batch_size=profile.batch_size // n, sampler=sampler,
            collate_fn=make_collator(tokenizer), generator=torch.Generator().manual_seed(seed))
    return loaders, labels


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
    if not _broadcast((where / "teacher.json").exists()):
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


def _save_teacher(model, tokenizer, where: Path, info: dict) -> None:
    """A complete Hugging Face checkpoint folder (model + tokenizer) plus ``teacher.json``."""
    tmp = where.with_name(where.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with _no_hf_bars():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    _write_json(tmp / "teacher.json", info)
    shutil.rmtree(where, ignore_errors=True)
    os.replace(tmp, where)


# ----------------------------------------------------------------------------- one run
def result_path(spec: RunSpec, profile_name: str, output) -> Path:
    return Path(output) / f"{spec.run_id(profile_name)}.json"


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
    if skip_existing and _broadcast(out_path.exists()):
        return json.loads(out_path.read_text())

    device = resolve_device(prof)
    distributed = D.init_from_env(device.type)
    device = D.device_for_rank(device.type)
    if distributed:
        D.check_supported(spec.method)
    if prof.threads:
        torch.set_num_threads(prof.threads)
    from transformers import AutoTokenizer

    from .models import encoder_path, load_encoder
    from .pruner import Pruner
    from .train import evaluate, train

    tokenizer = AutoTokenizer.from_pretrained(prof.model or encoder_path())
    loaders, labels = build_loaders(spec.task, tokenizer, prof, spec.seed)
    teacher, teacher_info = None, None
    if spec.distill:
        teacher, teacher_info = load_teacher(spec, base, output=output, cache_dir=cache_dir,
                                             progress=progress)
    model, _ = load_encoder(prof.model, num_labels=len(labels), num_layers=prof.num_layers,
                            seed=spec.seed, pooling=prof.pooling)
    model.to(device)
    steps_per_epoch = len(loaders["train"])
    total = max(1, round(prof.epochs * steps_per_epoch))
    warm, cool = round(prof.warmup_frac * total), round(prof.cooldown_frac * total)
    pruner = None
    if config is not None:
        pruner = Pruner(model, config, total_steps=total, warmup_steps=warm, cooldown_steps=cool)
    if prof.freeze_embeddings:  # before DDP, which records the parameters that need gradients
        param_groups(model, lr=prof.lr, freeze_embeddings=True)
    seed_everything(spec.seed)
    net = D.wrap_ddp(model, device) if distributed else model
    rid = spec.run_id(base.name)
    ckpt_dir = Path(cache_dir) / "runs" / rid if prof.checkpoint_every else None
    history = train(
        net, pruner, loaders, total_steps=total, lr=prof.lr, score_lr=prof.score_lr,
        weight_decay=prof.weight_decay, warmup=warm, freeze_embeddings=prof.freeze_embeddings,
        teacher=teacher, temperature=prof.temperature, alpha_distil=prof.alpha_distil,
        alpha_task=prof.alpha_task, log_every=prof.log_every, eval_every=prof.eval_every,
        device=device, progress=progress, checkpoint_dir=ckpt_dir,
        checkpoint_every=prof.checkpoint_every or total + 1, resume=resume, seed=spec.seed,
        on_step_end=(lambda step, m: D.sync_score_buffers(m)) if distributed else None,
        is_main=D.is_main(), eval_at_end=False,  # evaluated below, validation and test
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
    else:  # dense: nothing pruned
        remaining = {"global": 1.0, "per_layer": None, "per_group": None,
                     "of_all_parameters": 1.0,
                     "all_parameters": sum(p.numel() for p in model.parameters())}
        sched = dict(final=None)
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
            _save_teacher(model, tokenizer, teacher_dir(cache_dir, spec.task, prof, spec.seed),
                          dict(run_id=rid, metrics=metrics, num_labels=len(labels),
                               profile=prof.to_dict()))
        _write_json(out_path, result)
        if ckpt_dir is not None:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    D.barrier()
    return result


# ----------------------------------------------------------------------------- sweeps
def load_spec_file(path) -> dict:
    """Read a sweep spec from JSON or YAML (``.yaml``/``.yml`` needs PyYAML)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover
            raise SystemExit("YAML sweep specs need PyYAML (pip install pyyaml); or use JSON") \
                from None
        return yaml.safe_load(text)
    return json.loads(text)


def _as_list(v, default):
    if v is None:
        return list(default)
    return list(v) if isinstance(v, (list, tuple)) else [v]


SWEEP_KEYS = ("task", "tasks", "profile", "methods", "keep_ratios", "taus", "lams", "scope",
              "seeds", "distill", "dense", "overrides", "runs")


def expand_sweep(spec: dict) -> tuple[str, list[RunSpec]]:
    """The profile name and the list of runs of a sweep spec (see ``python -m mplib sweep -h``).

    Top_v methods take every ``keep_ratios`` entry; soft_movement / l0 / threshold take every
    ``taus`` x ``lams`` entry that applies. ``dense: true`` adds the dense run of every seed;
    ``runs`` adds explicit runs (dicts of :class:`RunSpec` fields).
    """
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        raise ValueError(f"unknown sweep key(s) {unknown}; known: {list(SWEEP_KEYS)}")
    profile = spec.get("profile", "ci")
    prof = get_profile(profile)
    tasks = _as_list(spec.get("tasks", spec.get("task")), ["rt"])
    seeds = _as_list(spec.get("seeds"), prof.seeds)
    distills = [bool(d) for d in _as_list(spec.get("distill"), [False])]
    overrides = dict(spec.get("overrides") or {})
    scope = spec.get("scope", "local")
    runs: list[RunSpec] = []
    for task, seed in itertools.product(tasks, seeds):
        if spec.get("dense"):
            runs.append(RunSpec(task=task, method="dense", seed=seed, overrides=overrides))
        for method, distill in itertools.product(_as_list(spec.get("methods"), []), distills):
            uses_keep, uses_tau, uses_lam, _ = METHODS[method] if method in METHODS else (
                (False,) * 4)
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r} in sweep; known {sorted(METHODS)}")
            keeps = _as_list(spec.get("keep_ratios"), [None]) if uses_keep else [None]
            taus = _as_list(spec.get("taus"), [None]) if uses_tau else [None]
            lams = _as_list(spec.get("lams"), [None]) if uses_lam else [None]
            for k, t, lam in itertools.product(keeps, taus, lams):
                runs.append(RunSpec(task=task, method=method, keep_ratio=k, tau=t, lam=lam,
                                    scope=scope if uses_keep else "local", distill=distill,
                                    seed=seed, overrides=overrides))
        for extra in spec.get("runs") or []:
            fields_ = dict(task=task, seed=seed, overrides=overrides)
            fields_.update(extra)
            runs.append(RunSpec(**fields_))
    for r in runs:
        r.pruning_config()  # every run is valid before the first one starts
    return profile, runs


def run_sweep(spec: dict, *, output="results/runs", cache_dir="results/cache",
              progress: bool = True, log=print) -> list[dict]:
    """Run every run of ``spec`` in order, skipping those whose result file already exists."""
    profile, runs = expand_sweep(spec)
    results = []
    for i, r in enumerate(runs, 1):
        path = result_path(r, profile, output)
        exists = _broadcast(path.exists())
        if D.is_main():
            log(f"[{i}/{len(runs)}] {r.run_id(profile)}" + (" (exists, skipped)" if exists
                                                             else ""))
        res = run_experiment(r, profile, output=output, cache_dir=cache_dir, progress=progress)
        results.append(res)
        if D.is_main() and not exists:
            log("    " + summary_line(res))
    return results


def summary_line(res: dict) -> str:
    m = res["metrics"]
    rem_s = ("dense" if res["spec"]["method"] == "dense"
             else f"remaining {res['remaining']['global']:.3f}")
    return (f"{res['run_id']}: val {m['validation']['accuracy']:.4f} test "
            f"{m['test']['accuracy']:.4f} {rem_s} ({res['wall_seconds']:.0f} s, "
            f"{res['step_seconds']:.3f} s/step)")


def summary_row(res: dict) -> dict:
    """The headline numbers of one result file (for tables and the book)."""
    spec, m, rem = res["spec"], res["metrics"], res["remaining"]
    return dict(run_id=res["run_id"], method=spec["method"], keep=spec["keep_ratio"],
                distill=spec["distill"], steps=res["train"]["total_steps"],
                val=m["validation"]["accuracy"], test=m["test"]["accuracy"],
                remaining=rem["global"], of_all=rem["of_all_parameters"],
                step_s=res["step_seconds"], cpu_s=res.get("train_cpu_seconds"),
                wall_s=res["wall_seconds"])


def format_table(rows: list[dict]) -> str:
    """Plain-text table of :func:`summary_row` dicts."""
    if not rows:
        return "(no result files)"
    head = list(rows[0])

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4f}" if v <= 1 else f"{v:.1f}"
        return "-" if v is None else str(v)

    table = [head] + [[cell(r[k]) for k in head] for r in rows]
    width = [max(len(line[i]) for line in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, width, strict=True))
                     for line in table)


def main_print(*args) -> None:
    if D.is_main():
        print(*args, file=sys.stdout, flush=True)
