"""Independent minimal replica of the paper's movement pruning layer and training step, written
from the paper (Sanh, Wolf & Rush 2020, §3-4) with plain torch + transformers: NO mplib import.

  * masked layer: y = (W ⊙ M) x + b, M = Top_v(S) per matrix (k = ceil(v N)); straight-through:
    dL/dS = dL/dM = (dL/dW') ⊙ W; scores initialised at 0.
  * optimiser: AdamW, weights lr 1e-4 (no decay), scores lr 1e-2 (no decay), linear warm-up over
    106 steps then linear decay to 0 at step 1,058; gradient clipping 1.0 over all parameters.
  * data: the token ids exported by export_data.py (same rows), shuffled by a DataLoader whose
    generator is seeded 0 (same permutation rule as the project); batch 16; dropout on.

Experiment (--mode cut): 400 steps with v = 1 (nothing masked, scores learning), then one-shot
7 % cuts (movement / magnitude / random; by the scores gained in steps 1-106 only ('early')
or in steps 107-400 only ('late'); movement on FFN-out only and on the last layer only),
validation on all rows. (--mode prune): the cubic schedule (106 dense, cubic to v=0.1 over 740
steps) stopped after --stop steps, validation on the first 256 rows every 25 steps.

    python tools/collapse/replica.py --mode cut
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForSequenceClassification

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "results" / "cache" / "collapse"
OUT = ROOT / "results" / "collapse"
T, T_WARM, T_COOL = 1058, 106, 212
TARGETS = ("attention.self.query", "attention.self.key", "attention.self.value",
           "attention.output.dense", "intermediate.dense", "output.dense")


class TopV(torch.autograd.Function):
    """Forward: 1 on the k largest scores of the matrix, 0 elsewhere. Backward: identity."""

    @staticmethod
    def forward(ctx, s, k):
        if k >= s.numel():
            return torch.ones_like(s)
        thresh = torch.topk(s.flatten(), k, sorted=False).values.min()
        return (s >= thresh).to(s.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class PrunedLinear(nn.Module):
    def __init__(self, lin: nn.Linear, name: str):
        super().__init__()
        self.name = name
        self.weight, self.bias = lin.weight, lin.bias
        self.scores = nn.Parameter(torch.zeros_like(lin.weight))
        self.v = 1.0

    def forward(self, x):
        k = math.ceil(self.v * self.weight.numel() - 1e-9)
        return F.linear(x, self.weight * TopV.apply(self.scores, k), self.bias)


def swap_in(model):
    layers = {}
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear) and name.startswith("bert.encoder.layer.") and \
                name.endswith(TARGETS) and not name.endswith("attention.output.dense.x"):
            parent = model.get_submodule(name.rsplit(".", 1)[0])
            new = PrunedLinear(mod, name)
            setattr(parent, name.rsplit(".", 1)[1], new)
            layers[name] = new
    return layers


def collate(rows):
    n = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), n, dtype=torch.long)
    att = torch.zeros(len(rows), n, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
        att[i, :len(r["input_ids"])] = 1
    return dict(input_ids=ids, attention_mask=att, token_type_ids=torch.zeros_like(ids),
                labels=torch.tensor([r["label"] for r in rows]))


@torch.no_grad()
def accuracy(model, rows):
    model.eval()
    right = 0
    for i in range(0, len(rows), 128):
        b = collate(rows[i:i + 128])
        lab = b.pop("labels")
        right += int((model(**b).logits.argmax(-1) == lab).sum())
    model.train()
    return right / len(rows)


def lr_factor(t):
    return (t + 1) / T_WARM if t < T_WARM else max(0.0, (T - t) / (T - T_WARM))


def cubic_v(t, v_final=0.1):
    if t < T_WARM:
        return 1.0
    if t >= T - T_COOL:
        return v_final
    p = (t - T_WARM) / (T - T_WARM - T_COOL)
    return v_final + (1.0 - v_final) * (1.0 - p) ** 3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("cut", "prune"), default="cut")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--stop", type=int, default=306)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    data = torch.load(CACHE / "rt_tokens.pt", weights_only=False)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(data["encoder"], num_labels=2)
    layers = swap_in(model)
    assert len(layers) == 36, len(layers)
    scores = [l.scores for l in layers.values()]
    others = [p for n, p in model.named_parameters() if not n.endswith("scores")]
    opt = torch.optim.AdamW([dict(params=others, lr=1e-4, weight_decay=0.0),
                             dict(params=scores, lr=1e-2, weight_decay=0.0)])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    val = data["validation"] if args.mode == "cut" else data["validation"][:256]
    steps = args.steps if args.mode == "cut" else args.stop
    gen = torch.Generator().manual_seed(0)
    model.train()
    t, epoch, evals, losses = 0, 0, [], []
    while t < steps:
        gen.manual_seed(0 + 1_000_003 * epoch)
        loader = torch.utils.data.DataLoader(data["train"], batch_size=16, shuffle=True,
                                             generator=gen, collate_fn=collate)
        for b in loader:
            if t >= steps:
                break
            v = 1.0 if args.mode == "cut" else cubic_v(t)
            for l in layers.values():
                l.v = v
            loss = model(**b).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(others + scores, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss))
            t += 1
            if t == T_WARM:   # scores at the end of the dense warm-up, for the early/late split
                early = {n: l.scores.detach().clone() for n, l in layers.items()}
            if args.mode == "prune" and t % 25 == 0:
                evals.append(dict(step=t, keep=v, accuracy=accuracy(model, val),
                                  train_loss_25=sum(losses[-25:]) / 25))
                print(evals[-1], flush=True)
        epoch += 1
    res = dict(script="tools/collapse/replica.py", mode=args.mode, steps=t,
               settings=dict(batch=16, lr=1e-4, score_lr=1e-2, warmup=T_WARM, total=T,
                             cooldown=T_COOL, clip=1.0, score_init=0.0, seed=0),
               train_loss_last50=sum(losses[-50:]) / 50)
    if args.mode == "cut":
        res["dense"] = accuracy(model, val)
        print("dense", res["dense"], flush=True)
        g = torch.Generator().manual_seed(1234)

        def cut(rule, which):
            saved = {}
            with torch.no_grad():
                for n, l in layers.items():
                    if not which(n):
                        continue
                    w = l.weight
                    rank = {"movement": l.scores, "magnitude": w.abs(),
                            "random": torch.rand(w.shape, generator=g),
                            "early": early[n],                  # S after steps 1..106
                            "late": l.scores - early[n]}[rule]  # S gained in steps 107..400
                    k = math.ceil(0.93 * w.numel())
                    saved[n] = w.detach().clone()
                    w.mul_(TopV.apply(rank.detach(), k))
            acc = accuracy(model, val)
            with torch.no_grad():
                for n, w0 in saved.items():
                    layers[n].weight.copy_(w0)
            return acc
        for rule in ("movement", "magnitude", "random", "early", "late"):
            res[f"all/{rule}"] = cut(rule, lambda n: True)
            print(rule, res[f"all/{rule}"], flush=True)
        res["ffn_out/movement"] = cut("movement", lambda n: n.endswith(".output.dense")
                                      and "attention" not in n)
        res["layer5/movement"] = cut("movement", lambda n: ".layer.5." in n)
        res["ffn_out/random"] = cut("random", lambda n: n.endswith(".output.dense")
                                    and "attention" not in n)
    else:
        res["eval"] = evals
    import transformers
    res.update(versions=dict(torch=torch.__version__, transformers=transformers.__version__),
               wall_seconds=time.perf_counter() - t_wall, cpu_seconds=time.process_time() - t_cpu,
               validation_rows=len(val))
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"replica_{args.mode}.json"
    path.write_text(json.dumps(res, indent=1) + "\n")
    print("done", res.get("wall_seconds"))


if __name__ == "__main__":
    main()
