#!/usr/bin/env python
"""Peak extra memory of global Top_v selection, against concatenating every score.

Usage::

    python bench/bench_global_memory.py [--quick] [--out results/bench/global_memory.json]
                                        [--threads 2] [--extra-threads 1] [--no-rss]

**What.** The peak memory that :func:`mplib.global_topk.global_budgets` (chunked histogram
selection, no copy of the scores) allocates on top of the score tensors themselves, against the
naive way (``torch.cat`` of every score, one ``kthvalue`` of the copy, then counts), for the
score shapes of MiniLM (36 matrices, 10.6 M entries) and, without ``--quick``, BERT-base
(72 matrices, 85 M entries); also their times, and whether both give identical budgets.

**How.** Two independent measurements. (a) ``torch.profiler`` with ``profile_memory=True``
records every CPU allocation and free; their running sum in time order is the live memory, its
maximum the peak. (b) A fresh subprocess (this script with a hidden ``--rss-child`` option)
builds the inputs, runs both methods once on a tiny set so code pages are resident, resets its
peak resident set size (``/proc/self/clear_refs`` <- 5), runs one method and reads ``VmHWM``.
Both are first checked on a known allocation of 100 MiB (``validation``). Timings are
interleaved repetitions of the two methods, at ``--threads`` and at ``--extra-threads``.

**Reading it.** ``*_fraction`` is the peak divided by the scores' own ``4 N`` bytes: mplib's
should stay below ``documented_bound_fraction`` (and far below the required 10 %), the naive
method's is about 100 % (the copy). ``budgets_identical`` must be true. If ``validation`` is not
close to 100 MiB, distrust the numbers of that method on this machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

import _common
import torch

import mplib
from mplib.global_topk import global_budgets

MIB = 1024 * 1024


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


def naive_global_budgets(tensors, keep_ratio: float) -> list[int]:
    """The authors' way: concatenate every score, one ``kthvalue`` of the copy, then counts
    (ties go to earlier matrices, as in mplib)."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    total = flat.numel()
    k = mplib.keep_count(total, keep_ratio)
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
    and free ``torch.profiler`` records, summed in time order: (peak, net, events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                 record_shapes=False) as prof:
        fn()
    raw = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                 if e.name() == "[memory]")
    running = list(itertools.accumulate(r[1] for r in raw))
    return (max([0, *running]), running[-1] if running else 0, len(raw))


def validation_fn():
    """A known peak: 100 MiB allocated, filled and freed, then 4 kB freed on return."""
    a = torch.empty(25 * MIB)
    a.fill_(1.0)
    del a
    return torch.ones(1000).sum()


METHODS = {"mplib": global_budgets, "naive": naive_global_budgets}


def rss_child(kind: str, which: str) -> dict:
    """In the subprocess: the peak-RSS increase of one call (``kind``: a method or validate)."""

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(key))

    tensors = make_scores(SCORE_SETS[which]) if kind != "validate" else []
    small = make_scores(SCORE_SETS["tiny"], seed=1)  # warm the code paths before the reset
    for fn in METHODS.values():
        fn(small, 0.1)
    torch.ones(10).sum()
    del small
    rss0 = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    hwm0 = status("VmHWM")
    if kind == "validate":
        validation_fn()
    else:
        METHODS[kind](tensors, 0.1)
    return dict(rss_before=rss0, hwm_after_reset=hwm0, hwm_after=status("VmHWM"),
                scores_bytes=sum(4 * t.numel() for t in tensors))


def rss_peak_bytes(kind: str, which: str, threads: int) -> dict:
    """Peak-RSS increase in a fresh subprocess (inputs built first, then the peak is reset)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", kind, which,
           "--threads", str(threads)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
        data = json.loads(res.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, json.JSONDecodeError, IndexError, OSError) as exc:
        return {"error": repr(exc)[:300]}
    data["peak_extra_bytes"] = data["hwm_after"] - data["rss_before"]
    return data


def _measure_set(which: str, *, time_reps: int, rss: bool, threads: int, time_threads) -> dict:
    tensors = make_scores(SCORE_SETS[which])
    n = sum(t.numel() for t in tensors)
    scores_bytes, bound = 4 * n, 24 * max(4096, n // 128)
    entry = {"matrices": len(tensors), "entries": n, "scores_bytes": scores_bytes,
             "documented_bound_bytes": bound,
             "documented_bound_fraction": round(bound / scores_bytes, 4),
             "required_fraction": 0.10,
             "budgets_identical": global_budgets(tensors, 0.1)
             == naive_global_budgets(tensors, 0.1)}
    labels = {"mplib": "mplib", "naive": "naive_cat_kthvalue"}
    for kind, fn in METHODS.items():
        p, net, ev = profiler_peak_bytes(lambda fn=fn, ts=tensors: fn(ts, 0.1))
        entry[labels[kind]] = {"profiler_peak_bytes": p, "profiler_net_bytes": net,
                               "profiler_events": ev,
                               "profiler_peak_fraction": round(p / scores_bytes, 5)}
    for n_threads in (threads, *time_threads):  # interleaved timing
        torch.set_num_threads(n_threads)
        samples = {kind: [] for kind in METHODS}
        for _ in range(time_reps):
            for kind, fn in METHODS.items():
                t0 = time.perf_counter()
                fn(tensors, 0.1)
                samples[kind].append(time.perf_counter() - t0)
        suffix = "" if n_threads == threads else f"_{n_threads}thread"
        for kind, ts in samples.items():
            entry[labels[kind]]["time" + suffix] = _common.summary(ts)
    torch.set_num_threads(threads)
    del tensors
    if not rss:
        return entry
    for kind in METHODS:
        r = rss_peak_bytes(kind, which, threads)
        x = entry[labels[kind]]
        x["rss_detail"] = r
        if "peak_extra_bytes" in r:
            x["rss_peak_extra_bytes"] = r["peak_extra_bytes"]
            x["rss_peak_fraction"] = round(r["peak_extra_bytes"] / scores_bytes, 5)
    return entry


def bench_global_memory(sets=("minilm", "bert_base"), *, time_reps: int = 5, rss: bool = True,
                        threads: int = 2, time_threads=(), log=print) -> dict:
    peak, net, n_events = profiler_peak_bytes(validation_fn)
    out: dict = {"validation": {
        "what": "allocate a 100 MiB tensor, fill it, free it, then a 4 kB tensor",
        "expected_peak_bytes": 100 * MIB, "profiler_peak_bytes": peak,
        "profiler_net_bytes": net, "profiler_events": n_events}}
    if rss:
        v = rss_peak_bytes("validate", "tiny", threads)
        out["validation"]["rss_peak_extra_bytes"] = v.get("peak_extra_bytes")
        out["validation"]["rss_detail"] = v
    log(f"  validation: 100 MiB allocation -> profiler peak {peak / MIB:.2f} MiB")
    for which in sets:
        out[which] = e = _measure_set(which, time_reps=time_reps, rss=rss, threads=threads,
                                      time_threads=time_threads)
        log(f"  {which}: N={e['entries']:,}: mplib peak "
            f"{100 * e['mplib']['profiler_peak_fraction']:.2f} %, naive "
            f"{100 * e['naive_cat_kthvalue']['profiler_peak_fraction']:.1f} % of the scores")
    return out


def run(*, quick: bool = False, sets=None, rss: bool = True, time_reps: int | None = None,
        threads: int = 2, extra_threads=(), log=print) -> dict:
    """The result file: ``global_memory`` (one entry per score set, and ``validation``)."""
    sets = sets or (("minilm",) if quick else ("minilm", "bert_base"))
    time_reps = time_reps if time_reps is not None else (2 if quick else 5)
    return _common.record(__file__, quick=quick, threads=threads, measure=lambda: {
        "global_memory": bench_global_memory(sets, time_reps=time_reps, rss=rss,
                                             threads=threads, time_threads=extra_threads,
                                             log=log)})


def table(result: dict) -> str:
    lines = []
    for which, e in result["global_memory"].items():
        if which == "validation":
            rss = e.get("rss_peak_extra_bytes")
            lines.append(f"memory-method validation (100 MiB): profiler "
                         f"{e['profiler_peak_bytes'] / MIB:.2f} MiB"
                         + (f", RSS {rss / MIB:.2f} MiB" if rss is not None else ""))
            continue
        for label in ("mplib", "naive_cat_kthvalue"):
            x = e[label]
            rss = f", RSS {100 * x['rss_peak_fraction']:.2f} %" if "rss_peak_fraction" in x else ""
            times = ", ".join(f"{x[k]['median_ms']:.0f} ms (min {x[k]['min_ms']:.0f}, "
                              f"{k.replace('time', '') or 'main threads'})"
                              for k in x if k.startswith("time"))
            lines.append(f"global {which:<10}{label:<20} peak "
                         f"{x['profiler_peak_bytes'] / MIB:8.2f} MiB = "
                         f"{100 * x['profiler_peak_fraction']:6.2f} % of scores{rss}; {times}")
        lines.append(f"  (scores {e['scores_bytes'] / MIB:.1f} MiB; documented bound "
                     f"{100 * e['documented_bound_fraction']:.2f} %, required 10 %; budgets "
                     f"identical: {e['budgets_identical']})")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _common.parse(
        argv, __doc__, "global_memory",
        no_rss=dict(action="store_true", help="skip the RSS subprocess check"),
        rss_child=dict(nargs=2, metavar=("KIND", "SET"), help=argparse.SUPPRESS))
    if args.rss_child:  # the subprocess of rss_peak_bytes
        torch.set_num_threads(args.threads)
        print(json.dumps(rss_child(*args.rss_child)))
        return 0
    sets = ("tiny",) if args.model == "tiny" else None
    return _common.finish(run(sets=sets, rss=not args.no_rss, **_common.run_options(args)),
                          args.out, table)


if __name__ == "__main__":
    raise SystemExit(main())
