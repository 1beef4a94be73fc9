"""7 % cut of the step-400 state ranked by a *fresh* first-order score S = -G ⊙ W (keep the
highest), G from 256 training rows (eval mode, not the training history), and -- as an in-sample
oracle -- G from the 256 validation rows it is then evaluated on. If even the oracle's cut is
catastrophic, a signed first-order ranking removes too coherent a set whatever the noise.

    PYTHONPATH=.:tools/collapse python tools/collapse/freshcut.py
"""
from __future__ import annotations

import torch
from common import CACHE, TOTAL_STEPS, Clock, evaluate, setup, versions, write_json
from cuts import apply_eval
from firstorder import grads

import mplib


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
    val = loaders["validation"]
    res = dict(dense=evaluate(model, val), versions=versions())
    for gname, batches in (("train256", train_b), ("validation256_oracle", val)):
        g = grads(model, layers, batches, False)
        masks = {k: mplib.topk_mask(-g[k] * layers[k].weight.detach(),
                                    mplib.keep_count(g[k].numel(), 0.93)).bool() for k in layers}
        res[gname] = apply_eval(model, layers, masks, val)
        print(gname, res[gname], flush=True)
    res.update(clock())
    write_json("freshcut_dense400.json", res)


if __name__ == "__main__":
    main()
