"""Probes: measurements about a method that are not one fine-pruning run.

``first_cut`` asks how long movement scores must train before the mask they choose is safe to
apply. The cubic schedule makes its biggest cuts right after the dense warm-up, so the scores'
ranking at that moment decides which weights go first. The probe fine-tunes densely with movement
scores attached and learning exactly as in a movement run (Adam, the profile's ``score_lr``, init
0, ``keep_ratio`` 1 so nothing is ever masked), and at chosen steps ``t`` measures, without
training further, the validation accuracy after a **one-shot** cut of every targeted matrix to a
keep ratio ``v``, chosen by

* movement: :math:`\\operatorname{Top}_v(S^{(t)})`, the mask the cubic would apply first;
* magnitude: :math:`\\operatorname{Top}_v(|W^{(t)}|)` of the same weights;
* random: a uniformly random :math:`\\lceil vN\\rceil` of each matrix (seeded), no information.

A movement mask no better than a random one at step ``t`` says the schedule should not start
cutting at ``t``. Each cut is ``W <- W * M`` in place, evaluated, then undone bit for bit.

Run it with ``python -m mplib probe --task rt --profile cpu --set batch_size=16``; it writes one
JSON (every number, profile, versions, hardware, wall time) like the runner does.

Taught in: book/03_fine_pruning.ipynb (the budget hazard).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..topk import keep_count, topk_mask
from .profiles import Profile, get_profile

__all__ = ["RULES", "first_cut", "one_shot_cut", "probe_path"]

RULES = ("movement", "magnitude", "random")
"""How a one-shot cut ranks the weights of each matrix."""


def one_shot_cut(model, layers, loader, keep: float, rule: str, *, seed: int, device=None) -> dict:
    """Validation metrics of ``model`` with every layer in ``layers`` cut to ``keep`` by ``rule``.

    ``layers`` are mplib masked layers (``.weight``, and ``.scores`` for ``rule="movement"``).
    The weights are restored exactly afterwards.
    """
    from .train import evaluate

    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    gen = torch.Generator().manual_seed(seed)
    saved = []
    with torch.no_grad():
        for layer in layers:
            w = layer.weight
            if rule == "movement":
                ranking = layer.scores.detach()
            elif rule == "magnitude":
                ranking = w.detach().abs()
            else:  # distinct uniform draws: no ties
                ranking = torch.rand(w.shape, generator=gen).to(w.device)
            mask = topk_mask(ranking, keep_count(w.numel(), keep)).to(w.dtype)
            saved.append(w.detach().clone())
            w.mul_(mask)
    try:
        return evaluate(model, loader, device=device)
    finally:
        with torch.no_grad():
            for layer, w in zip(layers, saved, strict=True):
                layer.weight.copy_(w)


def probe_path(task: str, profile: Profile, seed: int, overrides: dict, output) -> Path:
    from .runner import NOT_IN_RUN_ID, task_slug

    extra = "".join(f"+{k}{v}" for k, v in sorted(overrides.items()) if k not in NOT_IN_RUN_ID)
    return Path(output) / f"first_cut-{task_slug(task)}-{profile.name}-seed{seed}{extra}.json"


def first_cut(task: str = "rt", profile: Profile | str = "cpu", *, overrides: dict | None = None,
              steps: int = 1200, warmup: int = 106, at=(25, 50, 106, 150, 200, 300, 500, 800, 1200),
              keeps=(0.7, 0.3), seed: int = 0, output="results/probes", log=print) -> dict:
    """Run the first-cut probe and write its JSON; returns the result dict.

    Args:
        task, profile, overrides: data and model as for :func:`mplib.lab.runner.run_experiment`
            (``max_eval`` of the profile bounds the validation rows used for every cut).
        steps: dense fine-tuning steps; ``warmup``: LR warm-up steps (then linear decay to 0).
        at: steps (counted after the update) at which to probe; ``keeps``: keep ratios to cut to.
    """
    from .. import distributed as D
    from ..config import PruningConfig
    from ..pruner import Pruner
    from .env import hardware, seed_everything, versions, write_json
    from .runner import prepare, train_config
    from .train import evaluate, train

    t0 = time.perf_counter()
    overrides = dict(overrides or {})
    base = get_profile(profile) if isinstance(profile, str) else profile
    prof = base.with_overrides(**overrides) if overrides else base
    at = sorted({int(t) for t in at})
    if not at or at[0] < 1 or at[-1] > steps:
        raise ValueError(f"probe steps must lie in 1..{steps} (the --steps), got {at}")
    keeps = [float(k) for k in keeps]
    for k in keeps:
        if not 0 < k <= 1:
            raise ValueError(f"keep ratios must be in (0, 1], got {k}")
    if D.world_size() > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("the probe runs in one process; start it without torchrun")
    setup = prepare(task, prof, seed)
    model, loaders, device = setup.model, setup.loaders, setup.device
    pruner = Pruner(model, PruningConfig(method="movement", keep_ratio=1.0), total_steps=steps)
    seed_everything(seed)
    rows = []

    def probe(step: int, net) -> None:
        done = step + 1
        if done not in at:
            return
        row = dict(step=done, dense=evaluate(model, loaders["validation"], device=device))
        scores = torch.cat([layer.scores.detach().flatten() for layer in pruner.layers])
        row["score_span"] = float(scores.max() - scores.min())
        for keep in keeps:
            for rule in RULES:
                row[f"{rule}@{keep}"] = one_shot_cut(model, pruner.layers, loaders["validation"],
                                                     keep, rule, seed=1000 + done, device=device)
        rows.append(row)
        log(f"step {done:5d}  dense {row['dense']['accuracy']:.4f}  " + "  ".join(
            f"{rule[:3]}@{keep} {row[f'{rule}@{keep}']['accuracy']:.4f}"
            for keep in keeps for rule in RULES))

    train(model, pruner, loaders, train_config(prof, warmup=warmup, progress=False, seed=seed,
                                               eval_every=None),
          total_steps=steps, device=device, on_step_end=probe)
    result = dict(
        probe="first_cut", task=task, seed=seed, steps=steps, warmup=warmup, at=at, keeps=keeps,
        rules=list(RULES), profile=prof.to_dict(), overrides=overrides, rows=rows,
        validation_examples=len(loaders["validation"].dataset),
        versions=versions(), hardware=hardware(device),
        wall_seconds=time.perf_counter() - t0,
    )
    path = probe_path(task, base, seed, overrides, output)
    write_json(path, result)
    result["path"] = str(path)
    return result
