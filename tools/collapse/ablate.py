"""Short fine-pruning runs of the collapsing recipe (cpu + batch 16, 2 epochs: 1,058 steps,
106 dense, cubic over 740, keep 0.1) stopped after --stop steps, validation (first 256 rows)
every 25 steps. One change per run:

  --scores sgd         plain SGD on the scores (S -= lr_t * g, g = dL/dW' ⊙ W, unclipped, same
                       warm-up/decay factor). Top_v of SGD scores from init 0 does not depend on
                       the SGD LR (the whole trajectory is scale-invariant), so --sgd-lr is moot.
  --exclude PATTERN    PruningConfig(exclude_modules=...) (regex, re.fullmatch on module names)
  --freeze-emb         frozen embeddings
  --method M           magnitude / random / movement (default movement)
  --rowwise            OURS (not the paper): Top_v of S within each output row (every row
                       keeps ceil(v * in)), to test whether row concentration matters.
  --gate-magnitude F   OURS (not the paper): movement may only remove weights among the F x
                       (number to remove) smallest |W| of each matrix; inside that pool the
                       scores decide. Tests whether limiting the size of what a cut removes
                       (the first-order argument's failure, book/10_collapse) avoids the collapse.
  --prune-warmup N     dense pruning warm-up of N steps (LR warm-up unchanged, 106)
  --reset-scores-at N  zero the scores after step N (Adam moments kept): scores then hold only
                       the history after N.

Resumable: a checkpoint every 100 steps under results/cache/collapse/runs/<name>.

    PYTHONPATH=.:tools/collapse python tools/collapse/ablate.py --name baseline
"""
from __future__ import annotations

import argparse

import torch
from common import (
    CACHE,
    COOLDOWN,
    SEED,
    TOTAL_STEPS,
    WARMUP,
    Clock,
    setup,
    train,
    versions,
    write_json,
)

import mplib
from mplib.optim import linear_warmup_decay


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--method", default="movement")
    ap.add_argument("--scores", default="adam", choices=("adam", "sgd"))
    ap.add_argument("--sgd-lr", type=float, default=1.0)
    ap.add_argument("--exclude", nargs="*", default=None)
    ap.add_argument("--freeze-emb", action="store_true")
    ap.add_argument("--rowwise", action="store_true")
    ap.add_argument("--gate-magnitude", type=float, default=None)
    ap.add_argument("--stop", type=int, default=331)
    ap.add_argument("--prune-warmup", type=int, default=WARMUP,
                    help="dense pruning warm-up (the LR warm-up stays 106 steps)")
    ap.add_argument("--reset-scores-at", type=int, default=None,
                    help="zero every score after this many steps (Adam moments kept)")
    ap.add_argument("--eval-rows", type=int, default=256)
    args = ap.parse_args()
    clock = Clock()
    prof, loaders, model = setup(max_eval=args.eval_rows)
    cfg = mplib.PruningConfig(method=args.method, keep_ratio=0.1,
                              exclude_modules=tuple(args.exclude) if args.exclude else None)
    pruner = mplib.Pruner(model, cfg, total_steps=TOTAL_STEPS, warmup_steps=args.prune_warmup,
                          cooldown_steps=COOLDOWN)
    ckdir = CACHE / "runs" / args.name
    state = {"step": 0}
    ck = ckdir / "checkpoint.pt"
    if ck.exists():
        state["step"] = torch.load(ck, weights_only=False, map_location="cpu")["step"]
    score_lr = prof.score_lr
    if args.scores == "sgd":
        score_lr = 0.0
        for layer in pruner.layers:
            def hook(g, s=layer.scores):
                f = linear_warmup_decay(state["step"], warmup_steps=WARMUP,
                                        total_steps=TOTAL_STEPS)
                with torch.no_grad():
                    s.sub_(args.sgd_lr * f * g)
                return torch.zeros_like(g)      # Adam (lr 0) and the clip norm see nothing
            layer.scores.register_hook(hook)
    if args.rowwise:   # OURS: Top_v inside every output row (each row keeps ceil(v * in))
        from mplib.ste import TopKStraightThrough  # noqa: F401  (same straight-through rule)

        class RowTopV(torch.autograd.Function):
            @staticmethod
            def forward(ctx, s, v):
                k = mplib.keep_count(s.shape[1], v)
                if k == s.shape[1]:
                    return torch.ones_like(s)
                idx = torch.topk(s, k, dim=1).indices
                return torch.zeros_like(s).scatter_(1, idx, 1.0)

            @staticmethod
            def backward(ctx, g):
                return g, None
        for layer in pruner.layers:
            layer.forward_mask = (lambda L=layer: RowTopV.apply(L.scores, L.keep_ratio))
            layer.mask = (lambda L=layer: RowTopV.apply(L.scores.detach(), L.keep_ratio))

    if args.gate_magnitude is not None:   # OURS: movement inside a pool of small weights
        class GatedTopV(torch.autograd.Function):
            @staticmethod
            def forward(ctx, s, w, v):
                n = s.numel()
                k = mplib.keep_count(n, v)
                if k == n:
                    return torch.ones_like(s)
                pool = min(n, int(args.gate_magnitude * (n - k)))
                big = torch.ones(n, dtype=torch.bool)       # outside the pool: never removed
                big[torch.topk(w.abs().flatten(), pool, largest=False).indices] = False
                ranked = torch.where(big, torch.full_like(s.flatten(), float("inf")),
                                     s.flatten())
                return mplib.topk_mask(ranked, k).view_as(s).to(s.dtype)

            @staticmethod
            def backward(ctx, g):
                return g, None, None
        for layer in pruner.layers:
            layer.forward_mask = (lambda L=layer: GatedTopV.apply(L.scores, L.weight.detach(),
                                                                   L.keep_ratio))
            layer.mask = (lambda L=layer: GatedTopV.apply(L.scores.detach(),
                                                          L.weight.detach(), L.keep_ratio))

    def on_step_end(step, net):
        state["step"] = step + 1
        if args.reset_scores_at is not None and step + 1 == args.reset_scores_at:
            with torch.no_grad():
                for layer in pruner.layers:
                    if isinstance(layer.scores, torch.nn.Parameter):
                        layer.scores.zero_()

    torch.manual_seed(SEED)
    hist = train(model, pruner, loaders, total_steps=TOTAL_STEPS, lr=prof.lr, score_lr=score_lr,
                 warmup=WARMUP, freeze_embeddings=args.freeze_emb, log_every=25, eval_every=25,
                 eval_at_end=False, progress=False, seed=SEED, stop_after=args.stop,
                 checkpoint_dir=ckdir, checkpoint_every=100, on_step_end=on_step_end)
    for row in hist["log"]:
        row.pop("remaining_per_layer", None)
    out = dict(name=args.name, args=vars(args), profile=prof.to_dict(),
               pruning=dict(method=cfg.method, keep_ratio=0.1, exclude=args.exclude,
                            targeted_matrices=len(pruner.layers)),
               total_steps=TOTAL_STEPS, warmup=WARMUP, cooldown=COOLDOWN,
               eval=[dict(step=r["step"], accuracy=r["accuracy"], loss=r["loss"])
                     for r in hist["eval"]],
               log=hist["log"], train_cpu_seconds=hist.get("train_cpu_seconds"),
               resumed_from=hist.get("resumed_from"), versions=versions(), **clock())
    write_json(f"ablate_{args.name}.json", out)
    print(" ".join(f"{r['step']}:{r['accuracy']:.3f}" for r in out["eval"]))
    print("done", clock())


if __name__ == "__main__":
    main()
