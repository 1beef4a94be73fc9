#!/usr/bin/env python
"""CPU inference time of a MiniLM-shaped encoder: dense, masked-but-dense, and shrunk.

Usage::

    python bench/bench_structured_speed.py [--quick] [--out results/bench/structured_speed.json]
                                           [--threads 2] [--extra-threads 1] [--rounds 7]

**What.** Forward time of a ``BertModel`` with all-MiniLM-L6-v2's shapes (6 layers, hidden 384,
12 heads of 32, FFN 1536; untrained weights: speed does not depend on their values) at sequence
length 128, batch 1 and batch 32, for

* ``dense`` -- the model as built;
* ``zeros_<v>`` -- the same model after ``head_movement`` pruning to ``keep_ratio=v`` and
  ``mplib.bake``: the pruned heads and neurons are zeros inside dense matrices;
* ``shrunk_<v>`` -- that model after :func:`mplib.shrink.shrink_model`: the empty heads and neurons
  removed, a smaller dense model.

Per layer, ``keep_ratio=v`` keeps ``ceil(12 v)`` heads and ``ceil(1536 v)`` FFN neurons (0.3:
4 heads and 461 neurons, about 31 % of the encoder's Linear weights). The scores are set so
that query, key, value and output keep the same heads and both FFN matrices the same neurons
(what a converged run would agree on), so ``shrink_model`` removes every pruned head and neuron.
``max_abs_diff`` checks that the shrunk model computes what the masked one does.

**How.** One process, inputs fixed, ``torch.no_grad``, eval mode. Each round times one forward
of every variant in turn (interleaved, after one untimed warm-up call each), so a burst of load
from other users of the machine hits all variants of that round alike; a variant's
``speedup`` is the median over rounds of ``dense time / its time`` in the same round. Repeated
at ``--threads`` and ``--extra-threads``.

**Reading it.** ``zeros_*`` run at dense speed (``speedup`` about 1): zeros in a dense matrix
cost as much as any other value. ``shrunk_*`` gets faster as it shrinks, by less than the
parameter ratio because embeddings, LayerNorms, softmax and the per-call overhead do not
shrink. On a shared machine with fewer free cores than ``--threads``, thread synchronisation
can swamp a small forward pass (batch 1): compare with the 1-thread section and read
``loadavg_*``. Lagunas et al. 2021 report their speedups on a GPU
(1.84x at 41 % of BERT-base's Linear weights, SQuAD); these are CPU numbers of a smaller model.
"""

from __future__ import annotations

import copy
import statistics
import time

import _common
import torch

import mplib
from mplib.shrink import shrink_model

KEEP_RATIOS = (0.5, 0.3, 0.1)
SEQ_LEN = 128
BATCHES = (1, 32)


def _aligned_scores(model, rng: torch.Generator) -> None:
    """One random score per head / neuron of each layer, shared by the matrices that own it."""
    groups: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, layer in mplib.masked_layers(model).items():
            block, attention, _ = name.partition(".attention.")
            key = block + ".attention" if attention else name.rsplit(".", 2)[0] + ".ffn"
            if key not in groups:
                groups[key] = torch.randn(max(layer.scores.shape), generator=rng)
            layer.scores.copy_(groups[key].reshape(layer.scores.shape))


def build(model_cfg: dict, keep_ratio: float | None, seed: int = 0):
    """``(dense-or-baked model, shrunk model or None, facts)`` for one keep ratio."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(**model_cfg)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    if keep_ratio is None:
        return model, None, {}
    head = cfg.hidden_size // cfg.num_attention_heads
    mplib.wrap(model, mplib.PruningConfig(method="head_movement", keep_ratio=keep_ratio,
                                          head_size=head))
    _aligned_scores(model, torch.Generator().manual_seed(seed + 1))
    mplib.bake(model)
    small = copy.deepcopy(model)
    report = shrink_model(small)
    per_layer = list(report["blocks"].values())
    facts = {"keep_ratio": keep_ratio,
             "heads_per_layer": [b["heads"] for b in per_layer],
             "neurons_per_layer": [b["neurons"] for b in per_layer],
             "linear_params_fraction": round(report["linear_params_after"]
                                             / report["linear_params_before"], 4)}
    return model, small, facts


def _inputs(batch: int, vocab: int, seq: int = SEQ_LEN) -> dict:
    g = torch.Generator().manual_seed(batch)
    return {"input_ids": torch.randint(0, vocab, (batch, seq), generator=g),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def time_interleaved(models: dict, inputs: dict, rounds: int) -> dict:
    """Per variant: timing summary, and ``speedup`` = median over rounds of dense / variant."""
    times = {name: [] for name in models}
    with torch.no_grad():
        for m in models.values():
            m(**inputs)  # warm-up
        for _ in range(rounds):
            for name, m in models.items():
                t0 = time.perf_counter()
                m(**inputs)
                times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        ratios = [d / t for d, t in zip(times["dense"], ts, strict=True)]
        out[name] = {**_common.summary(ts), "speedup": round(statistics.median(ratios), 3),
                     "speedup_min": round(min(ratios), 3), "speedup_max": round(max(ratios), 3)}
    return out


def measure(model_cfg: dict, *, rounds: int, batches=BATCHES, seq_len: int = SEQ_LEN,
            log=print) -> dict:
    models, levels = {}, []
    models["dense"] = build(model_cfg, None)[0]
    probe = _inputs(2, model_cfg["vocab_size"], min(seq_len, 16))
    for v in KEEP_RATIOS:
        zeros, small, facts = build(model_cfg, v)
        with torch.no_grad():
            diff = (zeros(**probe).last_hidden_state - small(**probe).last_hidden_state)
        facts["max_abs_diff"] = float(diff.abs().max())
        levels.append(facts)
        models[f"zeros_{v}"], models[f"shrunk_{v}"] = zeros, small
        log(f"keep_ratio {v}: {facts}")
    timing = {}
    for b in batches:
        log(f"timing batch {b}, sequence {seq_len}, {rounds} rounds")
        timing[f"batch_{b}"] = time_interleaved(
            models, _inputs(b, model_cfg["vocab_size"], seq_len), rounds)
    return {"levels": levels, "timing": timing}


def run(*, quick: bool = False, model_cfg: dict | None = None, rounds: int | None = None,
        threads: int = 2, extra_threads=(), batches=BATCHES, seq_len: int = SEQ_LEN,
        log=print) -> dict:
    """The result file: ``setup``, ``structured_speed`` (at ``threads``) and
    ``structured_speed_<n>thread`` for each of ``extra_threads``."""
    model_cfg = model_cfg or _common.MINILM
    rounds = rounds or (2 if quick else 7)
    seq_len = min(seq_len, model_cfg["max_position_embeddings"])  # the tiny smoke model: 64

    def go():
        out = {"setup": {"model": model_cfg, "seq_len": seq_len, "batches": list(batches),
                         "rounds": rounds, "keep_ratios": list(KEEP_RATIOS)}}
        out["structured_speed"] = _common.with_threads(
            threads, lambda: measure(model_cfg, rounds=rounds, batches=batches,
                                     seq_len=seq_len, log=log))
        for n in extra_threads:
            out[f"structured_speed_{n}thread"] = _common.with_threads(
                n, lambda: measure(model_cfg, rounds=rounds, batches=batches,
                                   seq_len=seq_len, log=log))
        return out

    return _common.record(__file__, quick=quick, threads=threads, measure=go)


def table(result: dict) -> str:
    lines = []
    for key in [k for k in result if k.startswith("structured_speed")]:
        entry = result[key]
        lines.append(f"{key} ({entry['threads']} threads)")
        for lv in entry["levels"]:
            lines.append(f"  keep {lv['keep_ratio']}: heads {lv['heads_per_layer'][0]}, "
                         f"neurons {lv['neurons_per_layer'][0]} per layer, "
                         f"{100 * lv['linear_params_fraction']:.1f} % of Linear weights, "
                         f"max |diff| {lv['max_abs_diff']:.1e}")
        for b, variants in entry["timing"].items():
            lines.append(f"  {b}:")
            for name, v in variants.items():
                lines.append(f"    {name:<12} {v['median_ms']:9.2f} ms   speedup "
                             f"{v['speedup']:.2f}x ({v['speedup_min']:.2f}-"
                             f"{v['speedup_max']:.2f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    return _common.main(argv, __doc__, "structured_speed", run, table,
                        rounds=dict(type=int, help="interleaved rounds (default 7)"))


if __name__ == "__main__":
    raise SystemExit(main())
