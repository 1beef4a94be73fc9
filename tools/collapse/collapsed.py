"""What is broken in the baseline movement run at steps 100 / 200 / 300 (checkpoints copied
while ablate.py --name baseline ran): validation accuracy (first 256 rows) with the run's masks,
with the same weights unmasked, and with the masks but the step-100 (dense) weights; the [CLS]
spread per hidden state; logit std; LayerNorm input token norms.

    PYTHONPATH=.:tools/collapse python tools/collapse/collapsed.py ck_A.pt ck_B.pt ...
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
from cuts import Probe, cls_spread

import mplib


def main():
    clock = Clock()
    prof, loaders, model = setup(max_eval=256)
    pruner = mplib.Pruner(model, mplib.PruningConfig(method="movement", keep_ratio=0.1),
                          total_steps=TOTAL_STEPS, warmup_steps=WARMUP, cooldown_steps=COOLDOWN)
    layers = pruner.layers
    val = loaders["validation"]
    batch = next(iter(torch.utils.data.DataLoader(val.dataset.select(range(128)), batch_size=128,
                                                  collate_fn=val.collate_fn)))
    tok = batch["attention_mask"].bool()
    cks = [torch.load(CACHE / "runs" / "baseline" / p, weights_only=False, map_location="cpu")
           for p in sys.argv[1:]]
    cks.sort(key=lambda c: c["step"])
    first_weights = {k: v.clone() for k, v in cks[0]["model"].items()}
    out = dict(rows=[], versions=versions())
    for ck in cks:
        step = ck["step"]
        model.load_state_dict(ck["model"])
        pruner.step(step - 1)             # the masks the run used at its last step
        row = dict(step=step, keep_ratio=pruner.state["keep_ratio"])
        row["masked"] = evaluate(model, val)
        probe = Probe(model)
        o = probe.run(batch)
        row["cls_spread"] = cls_spread(o.hidden_states)
        row["logit_std"] = o.logits.std(0).tolist()
        row["ln_token_norm"] = {k.replace("bert.encoder.layer.", "L"):
                                float(v[tok].norm(dim=1).mean())
                                for k, v in probe.ln_in.items()}
        probe.close()
        for layer in layers:
            layer.keep_ratio = 1.0
        row["same_weights_unmasked"] = evaluate(model, val)
        pruner.step(step - 1)
        # masks of this step, weights of the first checkpoint (scores stay this step's)
        cur = {k: v.clone() for k, v in model.state_dict().items()}
        mixed = {k: (cur[k] if k.endswith("scores") else first_weights[k]) for k in cur}
        model.load_state_dict(mixed)
        row["these_masks_first_weights"] = evaluate(model, val)
        model.load_state_dict(cur)
        # per-matrix weight drift since the first checkpoint (kept entries only)
        drift = {}
        for name, layer in mplib.masked_layers(model).items():
            w0 = first_weights[name + ".weight"] if name + ".weight" in first_weights else None
            if w0 is None:
                continue
            m = layer.mask().bool()
            drift[name.replace("bert.encoder.layer.", "L")] = float(
                (layer.weight.detach() - w0)[m].norm() / w0[m].norm())
        row["kept_weight_drift_since_first"] = drift
        out["rows"].append(row)
        print(step, row["keep_ratio"], row["masked"]["accuracy"],
              row["same_weights_unmasked"]["accuracy"],
              row["these_masks_first_weights"]["accuracy"],
              [round(x, 3) for x in row["cls_spread"]], flush=True)
    out.update(clock())
    write_json("collapsed_baseline.json", out)


if __name__ == "__main__":
    main()
