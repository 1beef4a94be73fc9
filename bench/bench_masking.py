#!/usr/bin/env python
"""Cost of masking: training-step time per mplib method, and peak memory of global selection.

Usage::

    .venv/bin/python bench/bench_masking.py [--quick] [--out results/bench/masking.json]

1. **Training step** (forward + backward + AdamW step, optimizer on ``mplib.param_groups``) on CPU
   of a randomly initialised ``BertForSequenceClassification`` shaped like all-MiniLM-L6-v2
   (6 layers, hidden 384, 12 heads, FFN 1536, vocab 30522), batch 16 x 64 tokens, for: ``dense``
   (no wrap), every mplib method with its default targets, ``movement`` with ``scope="global"``
   (budgets recomputed at every step) and ``emmental``, a re-implementation of the authors' masked
   layer (full ``torch.sort`` of every score matrix on every forward, straight-through backward).
   Every masked variant is driven by the cubic schedule in its pruning phase (keep ratio about
   0.5 and moving every step, towards 0.1), so the exact masks are recomputed at every step. Score
   tensors are filled with distinct random values first (the state in the middle of training; a
   constant init would give the selection an easier all-ties input). The variants run interleaved
   (each round runs one step of every variant, in a fresh seeded random order, so that load from
   other processes on the shared machine, and any after-effect of one variant on the next, hits
   all of them alike); we report the median and IQR of the per-step times, the ratio of medians
   to ``dense`` and, as checks, the median of the per-round ratios, the ratio of the minima and
   the ratio of CPU (process) times. Every step time is kept in the JSON.
2. **Mask cost in isolation**: the time to compute every mask of the model once (no autograd),
   per method, and the cost of the NaN check inside :func:`mplib.topk.topk_mask`.
3. **Global selection memory**: peak extra memory of :func:`mplib.global_topk.global_budgets`
   over the score tensors of the same model (36 matrices, 10.6 M entries) and of a BERT-base-sized
   set (72 matrices, 85 M entries), relative to the scores' own ``4 N`` bytes, against the naive
   ``torch.cat`` + ``kthvalue``. Two independent measurements:
   (a) every CPU allocation and free recorded by ``torch.profiler`` (``profile_memory=True``),
   the running sum in time order gives the live bytes, its maximum the peak; (b) a fresh
   subprocess resets its peak RSS (``/proc/self/clear_refs`` <- 5) after building the inputs and
   reads ``VmHWM`` afterwards. Both are validated on a known allocation (a 100 MiB tensor).

Results go to a JSON file; a table is printed. ``--quick`` runs a handful of steps (smoke test).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mplib  # noqa: E402
import mplib.ste  # noqa: E402
from mplib.global_topk import global_budgets  # noqa: E402
from mplib.schedule import cubic_schedule  # noqa: E402
from mplib.surgery import select_modules  # noqa: E402
from mplib.topk import keep_count, topk_mask  # noqa: E402

MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
              intermediate_size=1536, max_position_embeddings=512)
"""all-MiniLM-L6-v2's shapes (22.7 M parameters; 36 prunable matrices, 10.6 M entries)."""

TINY = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64)
"""For the smoke test only."""

METHOD_CONFIGS: dict[str, dict] = {
    "magnitude": dict(method="magnitude", keep_ratio=0.1),
    "movement": dict(method="movement", keep_ratio=0.1),
    "soft_movement": dict(method="soft_movement", tau=0.1, lam=1.0),
    "l0": dict(method="l0", lam=1.0),
    "threshold": dict(method="threshold"),
    "random": dict(method="random", keep_ratio=0.1),
    "accumulated_movement": dict(method="accumulated_movement", keep_ratio=0.1),
    "snip": dict(method="snip", keep_ratio=0.1),
    "movement_global": dict(method="movement", keep_ratio=0.1, scope="global", global_every=1),
}
METHOD_CONFIGS["movement_before"] = dict(METHOD_CONFIGS["movement"])
"""movement with ``topk_mask_before`` (mplib's Top_v before this benchmark: same masks)."""
VARIANTS = ("dense", "magnitude", "movement", "movement_before", "soft_movement", "l0",
            "threshold", "random", "accumulated_movement", "snip", "movement_global", "emmental")


def topk_mask_before(scores: torch.Tensor, k: int) -> torch.Tensor:
    """mplib.topk.topk_mask as of commit 35cac10, kept here for the before/after comparison:
    NaN check with ``isnan().any()``, ``torch.kthvalue``, then ``>``, count, ties by cumsum."""
    n = scores.numel()
    with torch.no_grad():
        flat = scores.detach().reshape(-1)
        if k == n:
            return torch.ones_like(scores)
        if k == 0:
            return torch.zeros_like(scores)
        if torch.isnan(flat).any():
            raise ValueError("scores contain NaN")
        kth = torch.kthvalue(flat, n - k + 1).values
        keep = flat > kth
        missing = k - int(keep.sum())
        if missing > 0:
            tie = flat == kth
            keep |= tie & (torch.cumsum(tie, 0) <= missing)
        return keep.reshape(scores.shape).to(scores.dtype)


TOTAL_STEPS = 20_000  # schedule length; the benchmark runs inside its pruning phase
TARGET_KEEP = 0.5  # start where the scheduled keep ratio is about this


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------
def hardware_info() -> dict:
    model_name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:  # pragma: no cover
        tf_version = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = None
    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or model_name,
        "cpu_model": model_name,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "mem_total_bytes": mem_total,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": tf_version,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def summary(times_s: list[float]) -> dict:
    """Median, quartiles and IQR in milliseconds."""
    ms = sorted(t * 1e3 for t in times_s)
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        q1 = q3 = ms[0]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "q1_ms": round(q1, 3),
        "q3_ms": round(q3, 3),
        "iqr_ms": round(q3 - q1, 3),
        "min_ms": round(ms[0], 3),
        "max_ms": round(ms[-1], 3),
    }


# ---------------------------------------------------------------------------------------------
# the authors' masked layer, re-implemented (reference for "not slower than the original")
# ---------------------------------------------------------------------------------------------
class SortTopKStraightThrough(torch.autograd.Function):
    """The emmental behaviour: sort ALL scores (descending) on every forward, ones at the first k
    positions of the order, zeros elsewhere; identity backward (straight-through)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:
        flat = scores.reshape(-1)
        order = torch.sort(flat, descending=True).indices
        mask = torch.empty_like(flat)
        mask[order[k:]] = 0.0
        mask[order[:k]] = 1.0
        return mask.view_as(scores)

    @staticmethod
    def backward(ctx, grad_mask: torch.Tensor):
        return grad_mask, None


class EmmentalMaskedLinear(nn.Module):
    """``F.linear(x, W * TopK_sort(S), b)`` with learned scores (kept ratio set from outside)."""

    def __init__(self, base: nn.Linear, keep_ratio: float = 1.0):
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self.scores = nn.Parameter(torch.zeros_like(base.weight, requires_grad=False))
        self.keep_ratio = keep_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # same k as mplib (the authors used int(v * N); ceil keeps the two variants comparable)
        k = keep_count(self.weight.numel(), self.keep_ratio)
        mask = SortTopKStraightThrough.apply(self.scores, k)
        return F.linear(x, self.weight * mask, self.bias)


def wrap_emmental(model: nn.Module) -> list[EmmentalMaskedLinear]:
    """Replace mplib's default targets (the six encoder matrices per layer) by the reference."""
    names = select_modules(model, mplib.PruningConfig(method="movement", keep_ratio=0.1))
    layers = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = EmmentalMaskedLinear(getattr(parent, child))
        setattr(parent, child, layer)
        layers.append(layer)
    return layers


# ---------------------------------------------------------------------------------------------
# training-step benchmark
# ---------------------------------------------------------------------------------------------
def build_model(model_cfg: dict, seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(**model_cfg, num_labels=2)
    model = BertForSequenceClassification(config)
    model.train()
    return model


def start_step(total_steps: int = TOTAL_STEPS, target: float = TARGET_KEEP,
               final: float = 0.1) -> int:
    """First step at which the cubic schedule (1 -> final) has come down to ``target``."""
    for s in range(total_steps):
        if cubic_schedule(s, total_steps=total_steps, initial=1.0, final=final,
                          warmup_steps=0, cooldown_steps=0) <= target:
            return s
    return 0


@dataclass
class Variant:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    pruner: mplib.Pruner | None = None
    emmental_layers: list = field(default_factory=list)
    step_index: int = 0
    times: list = field(default_factory=list)
    cpu_times: list = field(default_factory=list)
    keep_ratios: list = field(default_factory=list)

    def train_step(self, inputs: dict, labels: torch.Tensor) -> None:
        if self.name == "movement_before":  # mplib's previous Top_v (identical masks)
            saved = mplib.ste.topk_mask
            mplib.ste.topk_mask = topk_mask_before
            try:
                return self._train_step(inputs, labels)
            finally:
                mplib.ste.topk_mask = saved
        return self._train_step(inputs, labels)

    def _train_step(self, inputs: dict, labels: torch.Tensor) -> None:
        t = self.step_index
        if self.pruner is not None:
            values = self.pruner.step(t)
            self.keep_ratios.append(values.get("keep_ratio"))
        elif self.emmental_layers:
            v = cubic_schedule(t, total_steps=TOTAL_STEPS, initial=1.0, final=0.1,
                               warmup_steps=0, cooldown_steps=0)
            for layer in self.emmental_layers:
                layer.keep_ratio = v
            self.keep_ratios.append(v)
        loss = self.model(**inputs, labels=labels).loss
        if self.pruner is not None:
            loss = loss + self.pruner.penalty()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_index += 1


def make_variant(name: str, model_cfg: dict, *, seed: int = 0, lr: float = 3e-5,
                 score_lr: float = 1e-2) -> Variant:
    model = build_model(model_cfg, seed)
    pruner, emmental_layers = None, []
    s0 = start_step()
    if name in METHOD_CONFIGS:
        config = mplib.PruningConfig(**METHOD_CONFIGS[name], seed=seed)
        pruner = mplib.Pruner(model, config, total_steps=TOTAL_STEPS)
    elif name == "emmental":
        emmental_layers = wrap_emmental(model)
    elif name != "dense":
        raise ValueError(f"unknown variant {name!r}")
    # distinct scores, as in the middle of training (an all-equal init is an easier input)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, module in model.named_modules():
            scores = getattr(module, "scores", None)
            if isinstance(scores, torch.Tensor):
                scores.add_(0.01 * torch.randn(scores.shape, generator=gen))
    optimizer = torch.optim.AdamW(
        mplib.param_groups(model, lr=lr, score_lr=score_lr, weight_decay=0.01)
    )
    variant = Variant(name, model, optimizer, pruner, emmental_layers, step_index=s0)
    if pruner is not None:
        pruner.step(s0)
    return variant


def make_batch(model_cfg: dict, batch_size: int, seq_len: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, model_cfg["vocab_size"], (batch_size, seq_len), generator=gen)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    labels = torch.randint(0, 2, (batch_size,), generator=gen)
    return inputs, labels


def bench_training(model_cfg: dict, *, variants=VARIANTS, batch_size: int = 16,
                   seq_len: int = 64, rounds: int = 15, warmup: int = 2,
                   order_seed: int = 0, log=print) -> dict:
    """Interleaved step timing; every variant's model, optimizer state and scores stay alive."""
    inputs, labels = make_batch(model_cfg, batch_size, seq_len)
    built = [make_variant(name, model_cfg) for name in variants]
    for v in built:  # warm-up: allocator, lazy kernels, optimizer state
        for _ in range(warmup):
            v.train_step(inputs, labels)
    round_loads, orders = [], []
    rng = random.Random(order_seed)
    t_start = time.perf_counter()
    for r in range(rounds):
        order = list(built)
        rng.shuffle(order)  # no fixed neighbours: a variant's after-effects land on all others
        orders.append([v.name for v in order])
        for v in order:
            c0, t0 = time.process_time(), time.perf_counter()
            v.train_step(inputs, labels)
            v.times.append(time.perf_counter() - t0)
            v.cpu_times.append(time.process_time() - c0)
        round_loads.append(loadavg()[0] if loadavg() else None)
        log(f"  round {r + 1}/{rounds}: "
            + " ".join(f"{v.name}={v.times[-1] * 1e3:.0f}" for v in built)
            + f"  (load {round_loads[-1]})")
    elapsed = time.perf_counter() - t_start

    by_name = {v.name: v for v in built}
    dense = by_name.get("dense")
    out = {}
    for v in built:
        entry = summary(v.times)
        entry["cpu"] = summary(v.cpu_times)
        entry["step_ms"] = [round(t * 1e3, 1) for t in v.times]  # in round order
        entry["cpu"]["step_ms"] = [round(t * 1e3, 1) for t in v.cpu_times]
        if dense is not None:
            entry["ratio_to_dense_of_min"] = round(min(v.times) / min(dense.times), 4)
            entry["cpu"]["ratio_to_dense"] = round(
                statistics.median(v.cpu_times) / statistics.median(dense.cpu_times), 4)
            entry["ratio_to_dense"] = round(
                statistics.median(v.times) / statistics.median(dense.times), 4)
            per_round = [a / b for a, b in zip(v.times, dense.times, strict=True)]
            entry["ratio_to_dense_per_round_median"] = round(statistics.median(per_round), 4)
        if v.keep_ratios and v.keep_ratios[0] is not None:
            entry["keep_ratio_first"] = round(v.keep_ratios[0], 6)
            entry["keep_ratio_last"] = round(v.keep_ratios[-1], 6)
            entry["keep_ratio_changes_every_step"] = all(
                a != b for a, b in itertools.pairwise(v.keep_ratios))
        if v.pruner is not None:
            entry["config"] = v.pruner.config.to_dict()
        out[v.name] = entry
    if "emmental" in by_name and "movement" in by_name:
        out["movement"]["ratio_to_emmental"] = round(
            statistics.median(by_name["movement"].times)
            / statistics.median(by_name["emmental"].times), 4)
        per_round = [a / b for a, b in zip(by_name["movement"].times,
                                           by_name["emmental"].times, strict=True)]
        out["movement"]["ratio_to_emmental_per_round_median"] = round(
            statistics.median(per_round), 4)
        out["movement"]["ratio_to_emmental_of_min"] = round(
            min(by_name["movement"].times) / min(by_name["emmental"].times), 4)
        out["movement"]["cpu"]["ratio_to_emmental"] = round(
            statistics.median(by_name["movement"].cpu_times)
            / statistics.median(by_name["emmental"].cpu_times), 4)
    return {
        "model_config": model_cfg,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "rounds": rounds,
        "warmup_steps_per_variant": warmup,
        "schedule": {"total_steps": TOTAL_STEPS, "start_step": start_step(),
                     "initial_keep_ratio": 1.0, "final_keep_ratio": 0.1},
        "optimizer": "torch.optim.AdamW(mplib.param_groups(model, lr=3e-5, score_lr=1e-2, "
                     "weight_decay=0.01)); embeddings trained (freeze_embeddings=False)",
        "order": "interleaved: each round runs one step of every variant, in a random order "
                 f"(random.Random({order_seed}).shuffle per round; see round_orders)",
        "round_orders": orders,
        "loss": "cross-entropy on fixed random labels + pruner.penalty() (lam=1 for "
                "soft_movement and l0, zero otherwise)",
        "loadavg_1min_per_round": round_loads,
        "timed_seconds": round(elapsed, 1),
        "variants": out,
    }


# ---------------------------------------------------------------------------------------------
# mask cost in isolation
# ---------------------------------------------------------------------------------------------
def _times(fn, reps: int) -> list[float]:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def _ms(ts: list[float]) -> dict:
    """Median and minimum in ms (the minimum is the least disturbed by other processes)."""
    return {"median_ms": round(statistics.median(ts) * 1e3, 3), "min_ms": round(min(ts) * 1e3, 3)}


def bench_masks(model_cfg: dict, *, reps: int = 20) -> dict:
    """Time to compute every mask of the model once (no autograd), per method, and what the NaN
    check of ``topk_mask`` costs: ``torch.isnan(flat).any()`` over the same score tensors."""
    out = {}
    movement_scores = None
    for name in ("magnitude", "movement", "threshold", "soft_movement", "l0", "movement_global"):
        v = make_variant(name, model_cfg)
        layers = list(mplib.masked_layers(v.model).values())
        if name == "movement":
            movement_scores = [layer.scores.detach() for layer in layers]

        def all_masks(layers=layers):
            with torch.no_grad():
                for layer in layers:
                    layer.forward_mask()

        out[name] = {"all_masks": _ms(_times(all_masks, reps))}
        if name == "movement_global":
            pr = v.pruner
            out[name]["global_budgets"] = _ms(_times(
                lambda pr=pr: mplib.global_topk.assign_global_budgets(pr.layers, 0.5), reps))
    # emmental: full sort per matrix
    emm = make_variant("emmental", model_cfg)

    def all_sorted_masks():
        with torch.no_grad():
            for layer in emm.emmental_layers:
                SortTopKStraightThrough.apply(layer.scores, layer.weight.numel() // 2)

    out["emmental"] = {"all_masks": _ms(_times(all_sorted_masks, reps))}

    def nan_checks():
        for s in movement_scores:
            torch.isnan(s.reshape(-1)).any()

    def topk_all():
        for s in movement_scores:
            topk_mask(s, s.numel() // 2)

    def topk_before_all():
        for s in movement_scores:
            topk_mask_before(s, s.numel() // 2)

    def kthvalue_all():
        for s in movement_scores:
            flat = s.reshape(-1)
            torch.kthvalue(flat, flat.numel() - flat.numel() // 2 + 1)

    def partition_all():
        import numpy as np

        for s in movement_scores:
            np.partition(s.reshape(-1).numpy(), s.numel() - s.numel() // 2)

    fns = {"isnan_any": nan_checks, "topk_mask": topk_all, "topk_mask_before": topk_before_all,
           "numpy_partition": partition_all, "torch_kthvalue": kthvalue_all}
    samples: dict = {name: [] for name in fns}
    for _ in range(3):  # interleaved repeats
        for name, fn in fns.items():
            samples[name] += _times(fn, reps)
    out["nan_check"] = {
        "what": "each over all score matrices of the model, k = N/2, ms (3 interleaved series)",
        "threads": torch.get_num_threads(),
        **{f"{name}_all_matrices": _ms(v) for name, v in samples.items()},
        "matrices": len(movement_scores),
        "entries": sum(s.numel() for s in movement_scores),
    }
    return out


# ---------------------------------------------------------------------------------------------
# global selection memory
# ---------------------------------------------------------------------------------------------
def score_shapes(hidden: int, intermediate: int, layers: int) -> list[tuple[int, int]]:
    """The six encoder matrices per layer, as nn.Linear weights (out, in)."""
    per_layer = [(hidden, hidden)] * 4 + [(intermediate, hidden), (hidden, intermediate)]
    return per_layer * layers


SCORE_SETS = {
    "minilm": score_shapes(384, 1536, 6),  # 36 matrices, 10,616,832 entries
    "bert_base": score_shapes(768, 3072, 12),  # 72 matrices, 84,934,656 entries
    "tiny": score_shapes(32, 64, 1),
}


def make_scores(shapes, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) for s in shapes]


def naive_global_budgets(tensors, keep_ratio: float, *, absolute: bool = False) -> list[int]:
    """The authors' way: concatenate every score, one ``kthvalue`` of the copy, then counts
    (ties to earlier matrices, as mplib)."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    if absolute:
        flat = flat.abs()
    total = flat.numel()
    k = keep_count(total, keep_ratio)
    kth = torch.kthvalue(flat, total - k + 1).values
    del flat
    greater = [int((t > kth).sum()) for t in tensors]
    equal = [int((t == kth).sum()) for t in tensors]
    need, budgets = k - sum(greater), []
    for g, e in zip(greater, equal, strict=True):
        take = min(e, need)
        budgets.append(g + take)
        need -= take
    return budgets


def profiler_peak_bytes(fn) -> tuple[int, int, int]:
    """Peak live CPU bytes allocated (and not yet freed) while ``fn`` runs, from every allocation
    and free event ``torch.profiler`` records, summed in time order. Returns (peak, net, events).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                 record_shapes=False) as prof:
        fn()
    raw = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
           if e.name() == "[memory]"]
    raw.sort(key=lambda r: r[0])
    running = list(itertools.accumulate(r[1] for r in raw))
    return (max([0, *running]), running[-1] if running else 0, len(raw))


def _validation_fn():
    a = torch.empty(25 * 1024 * 1024)  # 100 MiB
    a.fill_(1.0)
    del a
    b = torch.ones(1000)  # 4 kB, freed on return
    return b.sum()


RSS_CHILD_SCRIPT = r"""
import json, sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from bench.bench_masking import SCORE_SETS, make_scores, naive_global_budgets, _validation_fn
from mplib.global_topk import global_budgets

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
kind, which = {kind!r}, {which!r}
tensors = make_scores(SCORE_SETS[which]) if kind != "validate" else []
# warm-up on a tiny set: the same code paths once, so that library code pages and lazy
# initialisation are resident before the peak is reset (they are not the method's memory)
small = make_scores(SCORE_SETS["tiny"], seed=1)
global_budgets(small, 0.1); naive_global_budgets(small, 0.1); torch.ones(10).sum()
del small
rss0 = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
hwm0 = status("VmHWM")
if kind == "validate":
    _validation_fn()
elif kind == "mplib":
    global_budgets(tensors, 0.1)
else:
    naive_global_budgets(tensors, 0.1)
hwm1 = status("VmHWM")
print(json.dumps(dict(rss_before=rss0, hwm_after_reset=hwm0, hwm_after=hwm1,
                      scores_bytes=sum(4 * t.numel() for t in tensors))))
"""


def rss_peak_bytes(kind: str, which: str, threads: int) -> dict:
    """Peak-RSS increase in a fresh subprocess (inputs built first, then the peak is reset)."""
    code = RSS_CHILD_SCRIPT.format(root=str(ROOT), threads=threads, kind=kind, which=which)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=600, env=env, check=True)
        data = json.loads(res.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, json.JSONDecodeError, IndexError, OSError) as exc:
        return {"error": repr(exc)[:300]}
    data["peak_extra_bytes"] = data["hwm_after"] - data["rss_before"]
    return data


def bench_global_memory(sets=("minilm", "bert_base"), *, time_reps: int = 5,
                        rss: bool = True, threads: int = 2, time_threads=(),
                        log=print) -> dict:
    out: dict = {}
    mib = 1024 * 1024
    peak, net, n_events = profiler_peak_bytes(_validation_fn)
    out["validation"] = {
        "what": "allocate a 100 MiB tensor, fill it, free it, then a 4 kB tensor",
        "expected_peak_bytes": 100 * mib,
        "profiler_peak_bytes": peak,
        "profiler_net_bytes": net,
        "profiler_events": n_events,
    }
    if rss:
        v = rss_peak_bytes("validate", "tiny", threads)
        out["validation"]["rss_peak_extra_bytes"] = v.get("peak_extra_bytes")
        out["validation"]["rss_detail"] = v
    log(f"  validation: 100 MiB allocation -> profiler peak {peak / mib:.2f} MiB"
        + (f", RSS peak {out['validation']['rss_peak_extra_bytes'] / mib:.2f} MiB"
           if rss and out["validation"]["rss_peak_extra_bytes"] is not None else ""))
    for which in sets:
        shapes = SCORE_SETS[which]
        tensors = make_scores(shapes)
        n = sum(t.numel() for t in tensors)
        scores_bytes = 4 * n
        entry = {"matrices": len(tensors), "entries": n, "scores_bytes": scores_bytes,
                 "documented_bound_bytes": 24 * max(4096, n // 128),
                 "documented_bound_fraction": round(24 * max(4096, n // 128) / scores_bytes, 4),
                 "required_fraction": 0.10}
        b_mplib = global_budgets(tensors, 0.1)
        b_naive = naive_global_budgets(tensors, 0.1)
        entry["budgets_identical"] = b_mplib == b_naive
        for label, fn in (("mplib", global_budgets), ("naive_cat_kthvalue", naive_global_budgets)):
            p, net, ev = profiler_peak_bytes(lambda fn=fn, ts=tensors: fn(ts, 0.1))
            entry[label] = {"profiler_peak_bytes": p, "profiler_net_bytes": net,
                            "profiler_events": ev,
                            "profiler_peak_fraction": round(p / scores_bytes, 5)}
        # interleaved timing
        for n_threads in (threads, *time_threads):
            torch.set_num_threads(n_threads)
            t_m, t_n = [], []
            for _ in range(time_reps):
                t0 = time.perf_counter()
                global_budgets(tensors, 0.1)
                t_m.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                naive_global_budgets(tensors, 0.1)
                t_n.append(time.perf_counter() - t0)
            suffix = "" if n_threads == threads else f"_{n_threads}thread"
            entry["mplib"]["time" + suffix] = summary(t_m)
            entry["naive_cat_kthvalue"]["time" + suffix] = summary(t_n)
        torch.set_num_threads(threads)
        del tensors
        if rss:
            for label, kind in (("mplib", "mplib"), ("naive_cat_kthvalue", "naive")):
                r = rss_peak_bytes(kind, which, threads)
                entry[label]["rss_detail"] = r
                if "peak_extra_bytes" in r:
                    entry[label]["rss_peak_extra_bytes"] = r["peak_extra_bytes"]
                    entry[label]["rss_peak_fraction"] = round(
                        r["peak_extra_bytes"] / scores_bytes, 5)
        out[which] = entry
        log(f"  {which}: N={n:,} ({scores_bytes / mib:.1f} MiB): mplib profiler peak "
            f"{entry['mplib']['profiler_peak_bytes'] / mib:.2f} MiB "
            f"({100 * entry['mplib']['profiler_peak_fraction']:.2f} %), naive "
            f"{entry['naive_cat_kthvalue']['profiler_peak_bytes'] / mib:.1f} MiB "
            f"({100 * entry['naive_cat_kthvalue']['profiler_peak_fraction']:.1f} %)")
    return out


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def run(*, quick: bool = False, model_cfg: dict | None = None, rounds: int | None = None,
        warmup: int | None = None, threads: int = 2, variants=VARIANTS,
        memory_sets=None, rss: bool = True, mask_reps: int | None = None,
        batch_size: int = 16, seq_len: int = 64, extra_threads=(), log=print) -> dict:
    torch.set_num_threads(threads)
    model_cfg = model_cfg or MINILM
    rounds = rounds if rounds is not None else (2 if quick else 15)
    warmup = warmup if warmup is not None else (1 if quick else 2)
    mask_reps = mask_reps if mask_reps is not None else (3 if quick else 20)
    if memory_sets is None:
        memory_sets = ("minilm",) if quick else ("minilm", "bert_base")
    t0 = time.perf_counter()
    result = {
        "benchmark": "bench/bench_masking.py",
        "quick": quick,
        "hardware": hardware_info(),
        "loadavg_start": loadavg(),
    }
    log(f"threads={torch.get_num_threads()} load={result['loadavg_start']}")
    log("training step (ms) ...")
    result["training_step"] = bench_training(model_cfg, variants=variants,
                                             batch_size=batch_size, seq_len=seq_len,
                                             rounds=rounds, warmup=warmup, log=log)
    result["training_step"]["threads"] = threads
    result["loadavg_after_training"] = loadavg()
    for extra in extra_threads:
        # supplementary: with one thread no op waits for a second OpenMP worker that the
        # scheduler has given to another process, so a loaded machine disturbs it less
        torch.set_num_threads(extra)
        log(f"training step with {extra} thread(s) (supplementary) ...")
        res = bench_training(model_cfg, variants=variants, batch_size=batch_size,
                             seq_len=seq_len, rounds=rounds, warmup=warmup, log=log)
        res["threads"] = extra
        result[f"training_step_{extra}thread"] = res
        result[f"loadavg_after_training_{extra}thread"] = loadavg()
        torch.set_num_threads(threads)
    log("mask computation alone ...")
    result["masks_alone"] = bench_masks(model_cfg, reps=mask_reps)
    result["masks_alone"]["threads"] = threads
    for extra in extra_threads:
        torch.set_num_threads(extra)
        result[f"masks_alone_{extra}thread"] = bench_masks(model_cfg, reps=mask_reps)
        result[f"masks_alone_{extra}thread"]["threads"] = extra
        torch.set_num_threads(threads)
    log("global selection memory ...")
    result["global_memory"] = bench_global_memory(memory_sets, time_reps=2 if quick else 5,
                                                  rss=rss, threads=threads,
                                                  time_threads=extra_threads, log=log)
    result["loadavg_end"] = loadavg()
    result["wall_time_s"] = round(time.perf_counter() - t0, 1)
    return result


def _step_table(ts: dict) -> list[str]:
    tr = ts["variants"]
    lines = [f"training step, {ts.get('threads')} thread(s), {ts['rounds']} interleaved rounds"
             f" (1-min load per round {min(ts['loadavg_1min_per_round'])}-"
             f"{max(ts['loadavg_1min_per_round'])})",
             f"{'variant':<22}{'median ms':>11}{'IQR ms':>9}{'x dense':>9}{'x dense/rnd':>13}"
             f"{'min ms':>9}{'x dense min':>13}{'cpu x dense':>13}"]
    for name, e in tr.items():
        lines.append(f"{name:<22}{e['median_ms']:>11.1f}{e['iqr_ms']:>9.1f}"
                     f"{e.get('ratio_to_dense', float('nan')):>9.3f}"
                     f"{e.get('ratio_to_dense_per_round_median', float('nan')):>13.3f}"
                     f"{e['min_ms']:>9.1f}"
                     f"{e.get('ratio_to_dense_of_min', float('nan')):>13.3f}"
                     f"{e['cpu'].get('ratio_to_dense', float('nan')):>13.3f}")
    mv = tr.get("movement", {})
    if "ratio_to_emmental" in mv:
        lines.append(f"movement / emmental: {mv['ratio_to_emmental']:.3f} "
                     f"(per-round median {mv['ratio_to_emmental_per_round_median']:.3f}, "
                     f"of minima {mv['ratio_to_emmental_of_min']:.3f}, "
                     f"cpu {mv['cpu']['ratio_to_emmental']:.3f})")
    return lines


def table(result: dict) -> str:
    lines = _step_table(result["training_step"])
    for key, value in result.items():
        if key.startswith("training_step_") and isinstance(value, dict):
            lines += _step_table(value)
    for key in [k for k in result if k.startswith("masks_alone")]:
        ma = result[key]
        lines.append(f"all masks once, {ma.get('threads')} thread(s), ms median/min: " + ", ".join(
            f"{k}={v['all_masks']['median_ms']:.1f}/{v['all_masks']['min_ms']:.1f}"
            for k, v in ma.items() if isinstance(v, dict) and "all_masks" in v))
        nc = ma.get("nan_check")
        if nc:
            def f(name, nc=nc):
                x = nc[f"{name}_all_matrices"]
                return f"{x['median_ms']:.2f}/{x['min_ms']:.2f}"

            lines.append(f"  over {nc['matrices']} matrices, ms median/min: isnan().any() "
                         f"{f('isnan_any')}; topk_mask {f('topk_mask')} (before "
                         f"{f('topk_mask_before')}); numpy partition {f('numpy_partition')}, "
                         f"torch.kthvalue {f('torch_kthvalue')}")
    gm = result.get("global_memory", {})
    for which, e in gm.items():
        if which == "validation":
            lines.append(f"memory-method validation (100 MiB): profiler "
                         f"{e['profiler_peak_bytes'] / 2**20:.2f} MiB"
                         + (f", RSS {e['rss_peak_extra_bytes'] / 2**20:.2f} MiB"
                            if e.get("rss_peak_extra_bytes") is not None else ""))
            continue
        for label in ("mplib", "naive_cat_kthvalue"):
            x = e[label]
            rss_txt = (f", RSS {100 * x['rss_peak_fraction']:.2f} %"
                       if "rss_peak_fraction" in x else "")
            lines.append(f"global {which:<10}{label:<20} peak "
                         f"{x['profiler_peak_bytes'] / 2**20:8.2f} MiB = "
                         f"{100 * x['profiler_peak_fraction']:6.2f} % of scores"
                         f"{rss_txt}; " + ", ".join(
                             f"{x[k]['median_ms']:.0f} ms (min {x[k]['min_ms']:.0f}, "
                             f"{k.replace('time', '') or 'main threads'})"
                             for k in x if k.startswith("time")))
        lines.append(f"  (scores {e['scores_bytes'] / 2**20:.1f} MiB; documented bound "
                     f"{100 * e['documented_bound_fraction']:.2f} %, required 10 %; budgets "
                     f"identical: {e['budgets_identical']})")
    lines.append(f"load: start {result['loadavg_start']}, end {result['loadavg_end']}; "
                 f"wall {result['wall_time_s']} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "masking.json"))
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-rss", action="store_true", help="skip the RSS subprocess check")
    ap.add_argument("--extra-threads", type=int, default=1,
                    help="also time the steps with this many threads (0: don't; not in --quick)")
    args = ap.parse_args(argv)
    extra = () if args.quick or args.extra_threads == 0 else (args.extra_threads,)
    result = run(quick=args.quick, rounds=args.rounds, threads=args.threads,
                 rss=not args.no_rss, extra_threads=extra)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
