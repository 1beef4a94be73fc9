#!/usr/bin/env python
"""Training-step time per mplib method, as a ratio to the dense model and to the authors' layer.

Usage::

    python bench/bench_train_step.py [--quick] [--out results/bench/train_step.json]
                                     [--threads 2] [--extra-threads 1] [--rounds 15]

**What.** One training step (schedule step, forward, backward, AdamW step on
:func:`mplib.param_groups`) on CPU of a randomly initialised ``BertForSequenceClassification``
shaped like all-MiniLM-L6-v2, batch 16 x 64 tokens, for every variant of ``_variants.py``:
``dense`` (no masks), each mplib method, ``movement_global``, ``movement_before`` and
``emmental`` (the authors' full sort per forward). Masked variants run inside the pruning phase
of the cubic schedule, so every step recomputes every mask at a new kept ratio.

**How.** All variants stay alive side by side and run interleaved: each round runs one step of
every variant in a fresh seeded random order, so that load from other processes on a shared
machine (and any after-effect of one variant on the next) falls on all of them alike. Each step
is timed by wall clock and by process CPU time; every step time is kept in the JSON. With
``--extra-threads N`` the whole comparison is repeated with N threads (one thread is less
disturbed by a busy machine: no op waits for a second OpenMP worker).

**Reading it.** ``ratio_to_dense`` (ratio of medians) is the headline: the cost of masking per
step. The per-round median ratio, the ratio of minima and the CPU-time ratio are checks: when
they agree with it, load on the machine did not decide the result. ``movement`` carries
``ratio_to_emmental`` (< 1: mplib's Top_v is cheaper than sorting). ``loadavg_1min_per_round``
says how busy the machine was. ``keep_ratio_changes_every_step`` confirms the masks moved.
"""

from __future__ import annotations

import itertools
import random
import statistics
import time

import _common
import _variants
from _variants import VARIANTS, make_variant


def make_batch(model_cfg: dict, batch_size: int, seq_len: int, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, model_cfg["vocab_size"], (batch_size, seq_len), generator=gen)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    return inputs, torch.randint(0, 2, (batch_size,), generator=gen)


def _ratios(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Ratio of medians, median of the per-round ratios, ratio of minima."""
    per_round = statistics.median(x / y for x, y in zip(a, b, strict=True))
    return (round(statistics.median(a) / statistics.median(b), 4), round(per_round, 4),
            round(min(a) / min(b), 4))


def _entry(v, dense) -> dict:
    entry = _common.summary(v.times)
    entry["cpu"] = _common.summary(v.cpu_times)
    entry["step_ms"] = [round(t * 1e3, 1) for t in v.times]  # in round order
    entry["cpu"]["step_ms"] = [round(t * 1e3, 1) for t in v.cpu_times]
    if dense is not None:
        (entry["ratio_to_dense"], entry["ratio_to_dense_per_round_median"],
         entry["ratio_to_dense_of_min"]) = _ratios(v.times, dense.times)
        entry["cpu"]["ratio_to_dense"] = _ratios(v.cpu_times, dense.cpu_times)[0]
    if v.keep_ratios and v.keep_ratios[0] is not None:
        entry["keep_ratio_first"] = round(v.keep_ratios[0], 6)
        entry["keep_ratio_last"] = round(v.keep_ratios[-1], 6)
        entry["keep_ratio_changes_every_step"] = all(
            a != b for a, b in itertools.pairwise(v.keep_ratios))
    if v.pruner is not None:
        entry["config"] = v.pruner.config.to_dict()
    return entry


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
        round_loads.append((_common.loadavg() or [None])[0])
        log(f"  round {r + 1}/{rounds}: "
            + " ".join(f"{v.name}={v.times[-1] * 1e3:.0f}" for v in built)
            + f"  (load {round_loads[-1]})")
    elapsed = time.perf_counter() - t_start

    by_name = {v.name: v for v in built}
    out = {v.name: _entry(v, by_name.get("dense")) for v in built}
    if "emmental" in by_name and "movement" in by_name:
        mv, em, entry = by_name["movement"], by_name["emmental"], out["movement"]
        (entry["ratio_to_emmental"], entry["ratio_to_emmental_per_round_median"],
         entry["ratio_to_emmental_of_min"]) = _ratios(mv.times, em.times)
        entry["cpu"]["ratio_to_emmental"] = _ratios(mv.cpu_times, em.cpu_times)[0]
    return {
        "model_config": model_cfg,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "rounds": rounds,
        "warmup_steps_per_variant": warmup,
        "schedule": {"total_steps": _variants.TOTAL_STEPS, "start_step": _variants.start_step(),
                     "initial_keep_ratio": 1.0, "final_keep_ratio": _variants.FINAL_KEEP},
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


def run(*, quick: bool = False, model_cfg: dict | None = None, rounds: int | None = None,
        warmup: int | None = None, threads: int = 2, extra_threads=(), variants=VARIANTS,
        batch_size: int = 16, seq_len: int = 64, log=print) -> dict:
    """The result file: ``training_step`` (``threads``) and ``training_step_<n>thread`` (each
    of ``extra_threads``), with the load average after each."""
    rounds = rounds if rounds is not None else (2 if quick else 15)
    warmup = warmup if warmup is not None else (1 if quick else 2)

    def measure() -> dict:
        out = {}
        for n in (threads, *extra_threads):
            suffix = "" if n == threads else f"_{n}thread"
            log(f"training step, {n} thread(s) ...")
            out["training_step" + suffix] = _common.with_threads(n, lambda: bench_training(
                model_cfg or _common.MINILM, variants=variants, batch_size=batch_size,
                seq_len=seq_len, rounds=rounds, warmup=warmup, log=log))
            out["loadavg_after_training" + suffix] = _common.loadavg()
        return out

    return _common.record(__file__, quick=quick, threads=threads, measure=measure)


def _step_table(ts: dict) -> list[str]:
    loads = [x for x in ts["loadavg_1min_per_round"] if x is not None] or [float("nan")]
    lines = [f"training step, {ts['threads']} thread(s), {ts['rounds']} interleaved rounds"
             f" (1-min load per round {min(loads)}-{max(loads)})",
             f"{'variant':<22}{'median ms':>11}{'IQR ms':>9}{'x dense':>9}{'x dense/rnd':>13}"
             f"{'min ms':>9}{'x dense min':>13}{'cpu x dense':>13}"]
    nan = float("nan")
    for name, e in ts["variants"].items():
        lines.append(f"{name:<22}{e['median_ms']:>11.1f}{e['iqr_ms']:>9.1f}"
                     f"{e.get('ratio_to_dense', nan):>9.3f}"
                     f"{e.get('ratio_to_dense_per_round_median', nan):>13.3f}"
                     f"{e['min_ms']:>9.1f}{e.get('ratio_to_dense_of_min', nan):>13.3f}"
                     f"{e['cpu'].get('ratio_to_dense', nan):>13.3f}")
    mv = ts["variants"].get("movement", {})
    if "ratio_to_emmental" in mv:
        lines.append(f"movement / emmental: {mv['ratio_to_emmental']:.3f} "
                     f"(per-round median {mv['ratio_to_emmental_per_round_median']:.3f}, "
                     f"of minima {mv['ratio_to_emmental_of_min']:.3f}, "
                     f"cpu {mv['cpu']['ratio_to_emmental']:.3f})")
    return lines


def table(result: dict) -> str:
    return "\n".join(line for key, value in result.items()
                     if key.startswith("training_step") for line in _step_table(value))


def main(argv=None) -> int:
    return _common.main(argv, __doc__, "train_step", run, table,
                        rounds=dict(type=int, help="interleaved rounds (default 15)"))


if __name__ == "__main__":
    raise SystemExit(main())
