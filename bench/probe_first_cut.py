#!/usr/bin/env python
"""How long must movement scores train before their first cut is not destructive?

Usage::

    .venv/bin/python bench/probe_first_cut.py [--steps 1200] [--out results/probes/first_cut.json]

The budget hazard of ``results/recipes/README.md`` shows movement pruning of the 6-layer
all-MiniLM-L6-v2 collapsing as soon as the cubic starts (after 106 dense steps). This probe
separates the *ranking* from the *training under a shrinking mask*: it fine-tunes the model
densely (the ``cpu`` profile with batch 16 and the hazard recipe's 106 LR warm-up steps),
with movement scores attached and learning exactly as in the paper (Adam, score LR 1e-2, init 0,
keep ratio 1 so no weight is ever masked), and at a few steps it asks, without training further:
what is the validation accuracy if we now keep only ``v`` of every matrix, chosen

* by the movement scores, ``Top_v(S)`` (the mask the cubic would apply first);
* by magnitude, ``Top_v(|W|)`` of the current weights;
* at random (a fixed seed per step), the no-information control.

The masks are applied one-shot to the weights (``W * M``), evaluated on the first ``--eval-rows``
validation rows, and the weights restored. A movement mask no better than a random one after ``t``
dense steps says that the schedule should not start cutting before ``t``. Results go to a JSON
file (every number, the hardware and the wall time); a table is printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import mplib
from mplib.models import load_encoder
from mplib.profiles import get_profile
from mplib.runner import build_loaders, hardware, seed_everything, versions
from mplib.train import evaluate, train


def one_shot(model, pruner, loader, keep: float, rule: str, seed: int) -> dict:
    """Validation metrics with every targeted matrix cut to ``keep`` by ``rule`` (then restored)."""
    saved = []
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in pruner.layers:
            w = layer.weight
            k = mplib.keep_count(w.numel(), keep)
            if rule == "movement":
                ranking = layer.scores.detach()
            elif rule == "magnitude":
                ranking = w.detach().abs()
            else:  # random: distinct uniform draws, so no ties
                ranking = torch.rand(w.shape, generator=gen)
            mask = mplib.topk_mask(ranking, k).to(w.dtype)
            saved.append(w.detach().clone())
            w.mul_(mask)
    metrics = evaluate(model, loader)
    with torch.no_grad():
        for layer, w in zip(pruner.layers, saved, strict=True):
            layer.weight.copy_(w)
    return metrics


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--warmup", type=int, default=106, help="LR warm-up steps (hazard: 106)")
    ap.add_argument("--at", default="25,50,106,150,200,300,500,800,1200",
                    help="steps (after the update) at which to probe")
    ap.add_argument("--keeps", default="0.7,0.3")
    ap.add_argument("--eval-rows", type=int, default=512)
    ap.add_argument("--pooling", default="cls", choices=["cls", "mean"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/probes/first_cut.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    at = sorted({int(s) for s in args.at.split(",") if int(s) <= args.steps})
    keeps = [float(k) for k in args.keeps.split(",")]

    prof = get_profile("cpu", batch_size=16, max_eval=args.eval_rows, pooling=args.pooling)
    from transformers import AutoTokenizer

    from mplib.models import encoder_path

    tokenizer = AutoTokenizer.from_pretrained(encoder_path())
    loaders, labels = build_loaders("rt", tokenizer, prof, args.seed)
    model, _ = load_encoder(num_labels=len(labels), seed=args.seed, pooling=args.pooling)
    config = mplib.PruningConfig(method="movement", keep_ratio=1.0)  # scores learn, nothing cut
    pruner = mplib.Pruner(model, config, total_steps=args.steps)
    seed_everything(args.seed)
    rows = []

    def probe(step: int, net) -> None:
        done = step + 1
        if done not in at:
            return
        row = dict(step=done, dense=evaluate(model, loaders["validation"]))
        scores = torch.cat([layer.scores.detach().flatten() for layer in pruner.layers])
        row["score_span"] = float(scores.max() - scores.min())
        for keep in keeps:
            for rule in ("movement", "magnitude", "random"):
                row[f"{rule}@{keep}"] = one_shot(model, pruner, loaders["validation"], keep, rule,
                                                 seed=1000 + done)
        rows.append(row)
        print(f"step {done:5d}  dense {row['dense']['accuracy']:.4f}  " + "  ".join(
            f"{rule[:3]}@{keep} {row[f'{rule}@{keep}']['accuracy']:.4f}"
            for keep in keeps for rule in ("movement", "magnitude", "random")), flush=True)

    train(model, pruner, loaders, total_steps=args.steps, lr=prof.lr, score_lr=prof.score_lr,
          warmup=args.warmup, log_every=prof.log_every, eval_at_end=False, progress=False,
          seed=args.seed, on_step_end=probe)
    out = dict(
        probe="first_cut", argv=vars(args), profile=prof.to_dict(), rows=rows,
        versions=versions(),
        hardware=hardware(torch.device("cpu")),
        wall_seconds=time.perf_counter() - t0,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("result:", args.out, f"({out['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
