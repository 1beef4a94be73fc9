"""One-shot 7 % cuts of the cached dense-with-scores state (dense400.py) and the anatomy of the
cut set.

Part A (priority 1): validation accuracy (all 1,056 rows) after cutting 7 % of every matrix by
  movement (Adam scores, mplib), magnitude, random, and -- for comparison -- by the plain
  SGD-accumulated score -sum_t g (g = dL/dW' ⊙ W, recorded by hooks), then the movement cut
  restricted to one matrix type and to one layer.
Part B (priority 2): per matrix: concentration of the cut by row / column, |W| of the cut
  entries, sign consistency, Adam-vs-SGD score agreement; residual-stream outlier dims at each
  LayerNorm input; the coherence of the removed contribution (||(W ⊙ (1-M)) h|| for the cut
  set vs a random set of the same size); what the cut does to LayerNorm inputs and the per-layer
  [CLS] spread across examples.

    PYTHONPATH=.:tools/collapse python tools/collapse/cuts.py [--state dense400]
"""
from __future__ import annotations

import argparse

import torch
from common import (
    CACHE,
    TOTAL_STEPS,
    Clock,
    evaluate,
    layer_index,
    matrix_kind,
    setup,
    versions,
    write_json,
)

import mplib

KEEP = 0.93
KINDS = ("Q", "K", "V", "attn_out", "ffn_in", "ffn_out")


def cut_masks(layers, names, rule, acc, seed=1234):
    """{name: keep-mask} for a 7 % cut of every matrix by ``rule``."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in names:
        layer = layers[name]
        w = layer.weight.detach()
        if rule == "movement":
            rank = layer.scores.detach()
        elif rule == "magnitude":
            rank = w.abs()
        elif rule == "random":
            rank = torch.rand(w.shape, generator=gen)
        elif rule == "sgd":          # plain SGD on the scores from 0: S = -lr * sum g
            rank = -acc[name]["sum"]
        elif rule == "sign":         # pure sign consistency: -sum sign(g)
            rank = -acc[name]["sign"]
        else:
            raise ValueError(rule)
        out[name] = mplib.topk_mask(rank, mplib.keep_count(w.numel(), KEEP)).bool()
    return out


def apply_eval(model, layers, masks, loader):
    saved = {}
    with torch.no_grad():
        for name, m in masks.items():
            w = layers[name].weight
            saved[name] = w.detach().clone()
            w.mul_(m.to(w.dtype))
    try:
        return evaluate(model, loader)
    finally:
        with torch.no_grad():
            for name, w in saved.items():
                layers[name].weight.copy_(w)


class Probe:
    """Forward hooks: inputs of every LayerNorm and of every masked Linear, on a fixed batch."""

    def __init__(self, model):
        self.model = model
        self.ln_in, self.lin_in, self.handles = {}, {}, []
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.LayerNorm):
                self.handles.append(mod.register_forward_pre_hook(self._saver(self.ln_in, name)))
        for name, mod in mplib.masked_layers(model).items():
            self.handles.append(mod.register_forward_pre_hook(self._saver(self.lin_in, name)))

    @staticmethod
    def _saver(store, name):
        def hook(mod, args):
            store[name] = args[0].detach()
        return hook

    @torch.no_grad()
    def run(self, batch):
        self.ln_in.clear(), self.lin_in.clear()
        self.model.eval()
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "label")}
        out = self.model(**inputs, output_hidden_states=True)
        return out

    def close(self):
        for h in self.handles:
            h.remove()


def cls_spread(hidden_states):
    """Per hidden state: ||std over examples of [CLS]|| / ||mean over examples of [CLS]||."""
    out = []
    for h in hidden_states:
        c = h[:, 0, :]
        out.append(float(c.std(0).norm() / c.mean(0).norm()))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", default="dense400")
    ap.add_argument("--skip-a", action="store_true")
    args = ap.parse_args()
    clock = Clock()
    prof, loaders, model = setup()
    mplib.Pruner(model, mplib.PruningConfig(method="movement", keep_ratio=1.0),
                 total_steps=TOTAL_STEPS)
    st = torch.load(CACHE / f"{args.state}_state.pt", weights_only=False)
    model.load_state_dict(st["model"])
    acc, steps = st["acc"], st["steps"]
    layers = mplib.masked_layers(model)
    names = list(layers)
    val = loaders["validation"]
    res = dict(state=args.state, steps=steps, keep=KEEP, validation_rows=len(val.dataset),
               profile=prof.to_dict(), versions=versions())
    # ------------------------------------------------------------------ part A: accuracies
    if not args.skip_a:
        A = {"dense": evaluate(model, val)}
        print("dense", A["dense"], flush=True)
        for rule in ("movement", "magnitude", "random", "sgd", "sign"):
            A[f"all/{rule}"] = apply_eval(model, layers, cut_masks(layers, names, rule, acc), val)
            print(rule, A[f"all/{rule}"], flush=True)
        mv = cut_masks(layers, names, "movement", acc)
        for kind in KINDS:
            sub = {n: m for n, m in mv.items() if matrix_kind(n) == kind}
            A[f"type/{kind}/movement"] = apply_eval(model, layers, sub, val)
            print(kind, A[f"type/{kind}/movement"], flush=True)
        for li in range(6):
            sub = {n: m for n, m in mv.items() if layer_index(n) == li}
            A[f"layer/{li}/movement"] = apply_eval(model, layers, sub, val)
            print("layer", li, A[f"layer/{li}/movement"], flush=True)
        sg = cut_masks(layers, names, "sgd", acc)
        for kind in ("ffn_out", "ffn_in"):
            sub = {n: m for n, m in sg.items() if matrix_kind(n) == kind}
            A[f"type/{kind}/sgd"] = apply_eval(model, layers, sub, val)
        rd = cut_masks(layers, names, "random", acc)
        for kind in ("ffn_out",):
            sub = {n: m for n, m in rd.items() if matrix_kind(n) == kind}
            A[f"type/{kind}/random"] = apply_eval(model, layers, sub, val)
        sub = {n: m for n, m in rd.items() if layer_index(n) == 5}
        A["layer/5/random"] = apply_eval(model, layers, sub, val)
        res["accuracy"] = A
        res.update(clock())
        write_json(f"cuts_{args.state}.json", res)
    # ------------------------------------------------------------------ part B: anatomy
    batch = next(iter(torch.utils.data.DataLoader(
        val.dataset.select(range(128)), batch_size=128, collate_fn=val.collate_fn)))
    tokmask = batch["attention_mask"].bool()
    probe = Probe(model)
    dense_out = probe.run(batch)
    ln_dense = {k: v[tokmask] for k, v in probe.ln_in.items()}        # (tokens, 384)
    lin_dense = {k: v[tokmask] for k, v in probe.lin_in.items()}
    # residual outlier dims: mean |x| per dim at each LayerNorm input
    outliers = {}
    for k, x in ln_dense.items():
        m = x.abs().mean(0)
        med = m.median()
        top = torch.argsort(m, descending=True)[:5]
        outliers[k] = dict(top_dims=top.tolist(), top_mean_abs=m[top].tolist(),
                           median_mean_abs=float(med),
                           dims_over_5x_median=int((m > 5 * med).sum()))
    ln_weights = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.LayerNorm):
            g = mod.weight.detach().abs()
            top = torch.argsort(g, descending=True)[:5]
            ln_weights[name] = dict(top_dims=top.tolist(), top_abs=g[top].tolist(),
                                    median_abs=float(g.median()))
    mv = cut_masks(layers, names, "movement", acc)
    rd = cut_masks(layers, names, "random", acc)
    mg = cut_masks(layers, names, "magnitude", acc)
    per = {}
    for name in names:
        layer = layers[name]
        w = layer.weight.detach()
        cut = ~mv[name]                     # True where the movement cut removes
        n_cut = int(cut.sum())
        rows = cut.float().mean(1)          # fraction of each row (output dim) cut
        cols = cut.float().mean(0)          # fraction of each column (input dim) cut
        absw = w.abs()
        sgn = acc[name]["sign"].abs() / steps
        s_adam = layer.scores.detach().flatten()
        s_sgd = (-acc[name]["sum"]).flatten()
        # rank agreement of the two cut sets
        sgd_cut = ~cut_masks({name: layer}, [name], "sgd", acc)[name]
        # coherence: contribution removed, on the real inputs of this matrix
        h = lin_dense[name]                                   # (tokens, in)
        y = h @ w.T
        d_mv = h @ (w * cut).T
        d_rd = h @ (w * ~rd[name]).T
        d_mg = h @ (w * ~mg[name]).T
        # per-output-dim mean shift over tokens (coherent bias vs noise)
        per[name] = dict(
            kind=matrix_kind(name), layer=layer_index(name), shape=list(w.shape), n_cut=n_cut,
            max_row_frac=float(rows.max()),
            top_rows=torch.argsort(rows, descending=True)[:5].tolist(),
            top_row_fracs=torch.sort(rows, descending=True).values[:5].tolist(),
            rows_over_20pct=int((rows > 0.2).sum()),
            max_col_frac=float(cols.max()),
            top_cols=torch.argsort(cols, descending=True)[:5].tolist(),
            top_col_fracs=torch.sort(cols, descending=True).values[:5].tolist(),
            cols_over_20pct=int((cols > 0.2).sum()),
            mean_absw_cut_over_all=float(absw[cut].mean() / absw.mean()),
            frac_cut_that_magnitude_keeps=float((cut & mg[name]).sum() / n_cut),
            frac_cut_in_top1pct_absw=float(
                (cut & (absw >= torch.quantile(absw.flatten()[::7], 0.99))).sum() / n_cut),
            sign_consistency_cut=float(sgn[cut].mean()), sign_consistency_all=float(sgn.mean()),
            overlap_adam_sgd_cut=float((cut & sgd_cut).sum() / n_cut),
            overlap_adam_magnitude_cut=float((cut & ~mg[name]).sum() / n_cut),
            score_corr_adam_sgd=float(torch.corrcoef(torch.stack([s_adam, s_sgd]))[0, 1]),
            rel_removed_norm=dict(
                movement=float(d_mv.norm() / y.norm()), random=float(d_rd.norm() / y.norm()),
                magnitude=float(d_mg.norm() / y.norm())),
            rel_removed_mean_shift=dict(  # ||mean over tokens of removed part|| / ||y|| per token
                movement=float(d_mv.mean(0).norm() / y.norm(dim=1).mean()),
                random=float(d_rd.mean(0).norm() / y.norm(dim=1).mean()),
                magnitude=float(d_mg.mean(0).norm() / y.norm(dim=1).mean())),
        )
    # which LayerNorm input does each residual-writing matrix feed; do its cut rows hit outliers?
    for name, p in per.items():
        if p["kind"] not in ("attn_out", "ffn_out"):
            continue
        li = p["layer"]
        ln = (f"bert.encoder.layer.{li}.attention.output.LayerNorm" if p["kind"] == "attn_out"
              else f"bert.encoder.layer.{li}.output.LayerNorm")
        m = ln_dense[ln].abs().mean(0)
        order = torch.argsort(torch.argsort(m, descending=True))   # rank of every dim (0 = largest)
        p["ln_fed"] = ln
        p["top_rows_activation_rank"] = [int(order[r]) for r in p["top_rows"]]
        rows = (~mv[name]).float().mean(1)
        p["corr_rowcut_vs_mean_abs_act"] = float(torch.corrcoef(torch.stack([rows, m]))[0, 1])
    # after the cuts: LayerNorm inputs and [CLS] spread
    after = {}
    for rule, masks in (("movement", mv), ("random", rd), ("magnitude", mg)):
        saved = {}
        with torch.no_grad():
            for n, m in masks.items():
                saved[n] = layers[n].weight.detach().clone()
                layers[n].weight.mul_(m.to(saved[n].dtype))
        out = probe.run(batch)
        ln_cut = {k: v[tokmask] for k, v in probe.ln_in.items()}
        with torch.no_grad():
            for n, w0 in saved.items():
                layers[n].weight.copy_(w0)
        rows = {}
        for k in ln_dense:
            x0, x1 = ln_dense[k], ln_cut[k]
            dm = (x1.abs().mean(0) - x0.abs().mean(0))
            top = torch.argsort(dm.abs(), descending=True)[:3]
            rows[k] = dict(rel_change=float((x1 - x0).norm() / x0.norm()),
                           token_norm_dense=float(x0.norm(dim=1).mean()),
                           token_norm_cut=float(x1.norm(dim=1).mean()),
                           most_changed_dims=top.tolist(),
                           mean_abs_dense_at_those=x0.abs().mean(0)[top].tolist(),
                           mean_abs_cut_at_those=x1.abs().mean(0)[top].tolist())
        after[rule] = dict(ln_inputs=rows, cls_spread=cls_spread(out.hidden_states),
                           logit_std=out.logits.std(0).tolist(),
                           acc_on_128=float((out.logits.argmax(-1) == batch["labels"])
                                            .float().mean()))
    after["dense"] = dict(cls_spread=cls_spread(dense_out.hidden_states),
                          logit_std=dense_out.logits.std(0).tolist())
    probe.close()
    res.update(per_matrix=per, residual_outliers=outliers, layernorm_weights=ln_weights,
               after_cut=after, **clock())
    write_json(f"cuts_{args.state}.json" if args.skip_a is False
               else f"anatomy_{args.state}.json", res)
    print("done", clock())


if __name__ == "__main__":
    main()
