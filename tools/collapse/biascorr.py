"""Is the damage the *input-independent* (mean) part of what the cut removes?

Bias correction (ours, a diagnostic, not a pruning method): after cutting matrix W (y = W x + b)
to W ⊙ M, add the mean removed contribution back into its bias,
    b <- b + (W ⊙ (1 - M)) E[x],
with E[x] the mean input of that matrix over the non-padding tokens of 128 *training* snippets,
measured sequentially (matrix by matrix in forward order, on the model already cut and corrected
upstream). The input-dependent part of the removed contribution stays removed. Validation: first
256 rows.

Cases: the dense step-400 state (dense400.py) cut 7 % by movement / SGD score / random; and the
baseline run's step-200 masks on its step-100 (dense) weights (chance in collapsed.py).

    PYTHONPATH=.:tools/collapse python tools/collapse/biascorr.py ck_step100.pt ck_step200.pt
"""
from __future__ import annotations

import sys

import torch
from common import (
    CACHE,
    COOLDOWN,
    TOTAL_STEPS,
    WARMUP,
    Clock,
    evaluate,
    setup,
    versions,
    write_json,
)
from cuts import cut_masks

import mplib


def mean_input(model, module, batches):
    box = []

    def hook(mod, args):
        x = args[0].detach()
        box.append((x * mask[..., None]).sum((0, 1)) / mask.sum())
    h = module.register_forward_pre_hook(hook)
    model.eval()
    with torch.no_grad():
        for b in batches:
            mask = b["attention_mask"].to(torch.float32)
            model(**{k: v for k, v in b.items() if k != "labels"})
    h.remove()
    return torch.stack(box).mean(0)


def cut_and_correct(model, layers, masks, batches, correct):
    """Zero the cut entries (keep ratio 1 in the layers; masks applied to W directly)."""
    saved = {n: (l.weight.detach().clone(), l.bias.detach().clone()) for n, l in layers.items()}
    for name, layer in layers.items():        # forward order
        if name not in masks:
            continue
        if correct:
            xbar = mean_input(model, layer, batches)
        with torch.no_grad():
            removed = layer.weight * (~masks[name]).to(layer.weight.dtype)
            layer.weight.sub_(removed)
            if correct:
                layer.bias.add_(removed @ xbar)
    return saved


def restore(layers, saved):
    with torch.no_grad():
        for n, (w, b) in saved.items():
            layers[n].weight.copy_(w)
            layers[n].bias.copy_(b)


def main():
    clock = Clock()
    prof, loaders, model = setup(max_eval=256)
    pruner = mplib.Pruner(model, mplib.PruningConfig(method="movement", keep_ratio=0.1),
                          total_steps=TOTAL_STEPS, warmup_steps=WARMUP, cooldown_steps=COOLDOWN)
    for layer in pruner.layers:
        layer.keep_ratio = 1.0                 # masks are applied to W by hand below
    layers = mplib.masked_layers(model)
    val = loaders["validation"]
    gen = torch.Generator().manual_seed(7)
    tr = loaders["train"].dataset
    idx = torch.randperm(len(tr), generator=gen)[:128].tolist()
    batches = list(torch.utils.data.DataLoader(tr.select(idx), batch_size=32,
                                               collate_fn=loaders["train"].collate_fn))
    res = dict(rows=[], versions=versions(), train_rows_for_means=128)
    st = torch.load(CACHE / "dense400_state.pt", weights_only=False)
    model.load_state_dict(st["model"])
    res["dense400"] = evaluate(model, val)
    for rule in ("movement", "sgd", "random"):
        masks = cut_masks(layers, list(layers), rule, st["acc"])
        for correct in (False, True):
            saved = cut_and_correct(model, layers, masks, batches, correct)
            r = evaluate(model, val)
            restore(layers, saved)
            res["rows"].append(dict(state="dense400", cut=rule, bias_corrected=correct, **r))
            print(res["rows"][-1], flush=True)
    if len(sys.argv) >= 3:
        c100 = torch.load(CACHE / "runs" / "baseline" / sys.argv[1], weights_only=False)
        c200 = torch.load(CACHE / "runs" / "baseline" / sys.argv[2], weights_only=False)
        model.load_state_dict(c100["model"])
        keep = pruner.values_at(c200["step"] - 1)["keep_ratio"]
        masks = {}
        for name in layers:
            s = c200["model"][name + ".scores"]
            masks[name] = mplib.topk_mask(s, mplib.keep_count(s.numel(), keep)).bool()
        res["step100_dense"] = evaluate(model, val)
        for correct in (False, True):
            saved = cut_and_correct(model, layers, masks, batches, correct)
            r = evaluate(model, val)
            restore(layers, saved)
            res["rows"].append(dict(state="baseline step-100 weights + step-200 masks",
                                    keep=keep, bias_corrected=correct, **r))
            print(res["rows"][-1], flush=True)
    res.update(clock())
    write_json("biascorr.json", res)
    print("done", clock())


if __name__ == "__main__":
    main()
