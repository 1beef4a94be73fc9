"""Dense fine-tuning with movement scores learning (keep 1: nothing masked) for 400 steps of the
collapsing recipe (LR schedule of the 1,058-step run), then cache the state.

Besides mplib's Adam-trained scores it records, per weight, from hooks on the score gradients
g = dL/dS = (dL/dW') ⊙ W (before clipping):  sum g,  sum |g|,  sum sign(g).
Those give the plain-SGD score (-sum g, magnitude-weighted) and the sign consistency
|sum sign g| / t of every entry.

    PYTHONPATH=. python tools/collapse/dense400.py [--steps 400]
"""
from __future__ import annotations

import argparse

import torch
from common import CACHE, SEED, TOTAL_STEPS, WARMUP, Clock, setup, train, versions, write_json

import mplib


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    clock = Clock()
    prof, loaders, model = setup()
    pruner = mplib.Pruner(model, mplib.PruningConfig(method="movement", keep_ratio=1.0),
                          total_steps=TOTAL_STEPS)
    names = {id(layer): name for name, layer in mplib.masked_layers(model).items()}
    acc = {}
    for layer in pruner.layers:
        name = names[id(layer)]
        acc[name] = dict(sum=torch.zeros_like(layer.weight), abs=torch.zeros_like(layer.weight),
                         sign=torch.zeros_like(layer.weight))

        def hook(g, a=acc[name]):
            a["sum"].add_(g)
            a["abs"].add_(g.abs())
            a["sign"].add_(torch.sign(g))
        layer.scores.register_hook(hook)
    mplib_seed = SEED
    torch.manual_seed(mplib_seed)
    hist = train(model, pruner, loaders, total_steps=TOTAL_STEPS, lr=prof.lr,
                 score_lr=prof.score_lr, warmup=WARMUP, log_every=25,
                 eval_at_end=False, progress=False, seed=SEED, stop_after=args.steps,
                 checkpoint_dir=CACHE / f"dense{args.steps}", checkpoint_every=100, resume=False)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(dict(model=model.state_dict(), acc=acc, steps=hist["steps_done"]),
               CACHE / f"dense{args.steps}_state.pt")
    write_json(f"dense{args.steps}_train.json", dict(
        what="dense fine-tuning with movement scores learning, keep 1", steps=hist["steps_done"],
        total_steps_schedule=TOTAL_STEPS, warmup=WARMUP, profile=prof.to_dict(),
        log=hist["log"], train_cpu_seconds=hist.get("train_cpu_seconds"),
        versions=versions(), **clock()))
    print("done", hist["steps_done"], clock())


if __name__ == "__main__":
    main()
