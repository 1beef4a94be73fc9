"""Is a movement cut a (too) large step along a descent direction?  Line search along the cut.

For each 7 % cut set C of every matrix (movement = mplib Adam scores, sgd = -sum g, random,
magnitude), shrink the cut entries instead of zeroing them: W_C <- (1 - a) W_C for
a in (0.1, 0.25, 0.5, 1), and measure validation loss / accuracy (first 256 rows). Also the
first-order prediction of the loss change from the validation gradient G = dL/dW at the dense
point: dL_pred(a) = -a * sum_C G ⊙ W, and the total relative size of the step ||a W_C|| / ||W||.

    PYTHONPATH=.:tools/collapse python tools/collapse/overshoot.py
"""
from __future__ import annotations

import torch
from common import CACHE, TOTAL_STEPS, Clock, evaluate, setup, versions, write_json
from cuts import cut_masks

import mplib

ALPHAS = (0.1, 0.25, 0.5, 1.0)


def main():
    clock = Clock()
    prof, loaders, model = setup(max_eval=256)
    mplib.Pruner(model, mplib.PruningConfig(method="movement", keep_ratio=1.0),
                 total_steps=TOTAL_STEPS)
    st = torch.load(CACHE / "dense400_state.pt", weights_only=False)
    model.load_state_dict(st["model"])
    acc = st["acc"]
    layers = mplib.masked_layers(model)
    names = list(layers)
    val = loaders["validation"]
    # validation gradient at the dense point (eval mode: no dropout), mean over 256 rows
    model.eval()
    model.zero_grad(set_to_none=True)
    n = 0
    for batch in val:
        out = model(**batch)
        (out.loss * batch["labels"].numel()).backward()
        n += batch["labels"].numel()
    grads = {k: layers[k].weight.grad.detach() / n for k in names}
    model.zero_grad(set_to_none=True)
    res = dict(alphas=ALPHAS, validation_rows=n, dense=evaluate(model, val), rules={},
               profile=prof.to_dict(), versions=versions())
    print("dense", res["dense"], flush=True)
    wnorm = sum(float(layers[k].weight.detach().pow(2).sum()) for k in names) ** 0.5
    for rule in ("movement", "sgd", "random", "magnitude"):
        masks = cut_masks(layers, names, rule, acc)
        first = -sum(float((grads[k] * layers[k].weight.detach() * (~masks[k])).sum())
                     for k in names)
        step = sum(float((layers[k].weight.detach() * (~masks[k])).pow(2).sum())
                   for k in names) ** 0.5
        rows = []
        for a in ALPHAS:
            saved = {}
            with torch.no_grad():
                for k in names:
                    w = layers[k].weight
                    saved[k] = w.detach().clone()
                    w.mul_(1 - a * (~masks[k]).to(w.dtype))
            r = evaluate(model, val)
            with torch.no_grad():
                for k in names:
                    layers[k].weight.copy_(saved[k])
            rows.append(dict(alpha=a, accuracy=r["accuracy"], loss=r["loss"],
                             first_order_dloss=a * first,
                             actual_dloss=r["loss"] - res["dense"]["loss"]))
            print(rule, rows[-1], flush=True)
        res["rules"][rule] = dict(rows=rows, rel_step_norm=step / wnorm)
    res.update(clock())
    write_json("overshoot_dense400.json", res)
    print("done", clock())


if __name__ == "__main__":
    main()
