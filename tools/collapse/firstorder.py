"""Does the current gradient agree with the accumulated scores? First-order loss change of the
7 % cuts of the step-400 state, -sum_C G ⊙ W, with G = dL/dW measured on 256 validation rows
(eval mode), 256 training rows (eval mode) and the same training rows with dropout on.
Negative = the cut is predicted to lower that loss.

    PYTHONPATH=.:tools/collapse python tools/collapse/firstorder.py
"""
from __future__ import annotations

import torch
from common import CACHE, TOTAL_STEPS, Clock, setup, versions, write_json
from cuts import cut_masks

import mplib


def grads(model, layers, batches, train_mode):
    model.train(train_mode)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    n = 0
    for b in batches:
        out = model(**b)
        (out.loss * b["labels"].numel()).backward()
        n += b["labels"].numel()
    g = {k: layers[k].weight.grad.detach() / n for k in layers}
    model.zero_grad(set_to_none=True)
    return g


def main():
    clock = Clock()
    prof, loaders, model = setup(max_eval=256)
    mplib.Pruner(model, mplib.PruningConfig(method="movement", keep_ratio=1.0),
                 total_steps=TOTAL_STEPS)
    st = torch.load(CACHE / "dense400_state.pt", weights_only=False)
    model.load_state_dict(st["model"])
    layers = mplib.masked_layers(model)
    tr = loaders["train"].dataset
    idx = torch.randperm(len(tr), generator=torch.Generator().manual_seed(7))[:256].tolist()
    train_b = list(torch.utils.data.DataLoader(tr.select(idx), batch_size=64,
                                               collate_fn=loaders["train"].collate_fn))
    G = dict(validation_eval=grads(model, layers, loaders["validation"], False),
             train_eval=grads(model, layers, train_b, False),
             train_dropout=grads(model, layers, train_b, True))
    res = dict(rows={}, versions=versions())
    for rule in ("movement", "sgd", "random", "magnitude"):
        masks = cut_masks(layers, list(layers), rule, st["acc"])
        row = {}
        for gname, g in G.items():
            row[gname] = -sum(float((g[k] * layers[k].weight.detach() * (~masks[k])).sum())
                              for k in layers)
        # the accumulated (training-history) first-order change, per step on average
        row["history_mean_per_step"] = -sum(float((st["acc"][k]["sum"] * (~masks[k])).sum())
                                            for k in layers) / st["steps"]
        res["rows"][rule] = row
        print(rule, row, flush=True)
    res.update(clock())
    write_json("firstorder_dense400.json", res)


if __name__ == "__main__":
    main()
