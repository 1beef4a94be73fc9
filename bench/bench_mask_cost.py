#!/usr/bin/env python
"""Cost of computing the masks alone, per method, and of the NaN check inside Top_v.

Usage::

    python bench/bench_mask_cost.py [--quick] [--out results/bench/mask_cost.json]
                                    [--threads 2] [--extra-threads 1] [--reps 20]

**What.** (1) ``all_masks``: the time to compute every mask of the MiniLM-shaped model once,
without autograd, for magnitude, movement, threshold, soft_movement, l0, movement_global (plus
the time of :func:`mplib.global_topk.assign_global_budgets` alone) and the authors' full sort
(``emmental``). (2) ``nan_check``: over the movement scores of the same model (k = N/2), what
:func:`mplib.topk.topk_mask` costs against its previous version (``topk_mask_before``, which
checked ``isnan().any()`` separately), against that check alone, and against the bare selection
kernels ``torch.kthvalue`` and ``numpy.partition``.

**How.** The models are built as in ``bench_train_step.py`` (``_variants.make_variant``: inside
the pruning phase, distinct random scores). Each quantity is timed ``--reps`` times after one
untimed call; the five ``nan_check`` quantities run as three interleaved series.

**Reading it.** Compare ``all_masks`` between methods and with ``emmental``: it is the part of a
step's cost that masking adds before the matrix products. ``median_ms`` is typical, ``min_ms``
the least disturbed by other processes. In ``nan_check``, ``topk_mask`` near ``torch_kthvalue``
means the check costs little; ``isnan_any`` is what a separate check would add.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import _common
import torch
from _variants import SortTopKStraightThrough, make_variant, topk_mask_before

import mplib
import mplib.global_topk

MASK_METHODS = ("magnitude", "movement", "threshold", "soft_movement", "l0", "movement_global")


def _repeat(fn: Callable[[], object], reps: int) -> list[float]:
    """Durations in seconds of ``reps`` calls of ``fn``, after one untimed call."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def _median_min(times_s: list[float]) -> dict:
    """Median and minimum in ms (the minimum is the least disturbed by other processes)."""
    return {"median_ms": round(statistics.median(times_s) * 1e3, 3),
            "min_ms": round(min(times_s) * 1e3, 3)}


def _selection_fns(scores: list[torch.Tensor]) -> dict:
    """Each function runs one selection (k = N/2) over every matrix in ``scores``."""
    import numpy as np

    def each(fn):
        def over_all():
            for s in scores:
                fn(s, s.numel(), s.numel() // 2)

        return over_all

    return {
        "isnan_any": each(lambda s, n, k: torch.isnan(s.reshape(-1)).any()),
        "topk_mask": each(lambda s, n, k: mplib.topk_mask(s, k)),
        "topk_mask_before": each(lambda s, n, k: topk_mask_before(s, k)),
        "numpy_partition": each(lambda s, n, k: np.partition(s.reshape(-1).numpy(), n - k)),
        "torch_kthvalue": each(lambda s, n, k: torch.kthvalue(s.reshape(-1), n - k + 1)),
    }


def bench_masks(model_cfg: dict, *, reps: int = 20) -> dict:
    """``all_masks`` per method (and ``global_budgets`` for the global scope), ``nan_check``."""
    out = {}
    movement_scores = None
    for name in MASK_METHODS:
        v = make_variant(name, model_cfg)
        layers = list(mplib.masked_layers(v.model).values())
        if name == "movement":
            movement_scores = [layer.scores.detach() for layer in layers]

        def all_masks(layers=layers):
            with torch.no_grad():
                for layer in layers:
                    layer.forward_mask()

        out[name] = {"all_masks": _median_min(_repeat(all_masks, reps))}
        if name == "movement_global":
            pr = v.pruner
            out[name]["global_budgets"] = _median_min(_repeat(
                lambda pr=pr: mplib.global_topk.assign_global_budgets(pr.layers, 0.5), reps))
    emm = make_variant("emmental", model_cfg)

    def all_sorted_masks():
        with torch.no_grad():
            for layer in emm.emmental_layers:
                SortTopKStraightThrough.apply(layer.scores, layer.weight.numel() // 2)

    out["emmental"] = {"all_masks": _median_min(_repeat(all_sorted_masks, reps))}

    fns = _selection_fns(movement_scores)
    samples: dict = {name: [] for name in fns}
    for _ in range(3):  # interleaved series
        for name, fn in fns.items():
            samples[name] += _repeat(fn, reps)
    out["nan_check"] = {
        "what": "each over all score matrices of the model, k = N/2, ms (3 interleaved series)",
        "threads": torch.get_num_threads(),
        **{f"{name}_all_matrices": _median_min(v) for name, v in samples.items()},
        "matrices": len(movement_scores),
        "entries": sum(s.numel() for s in movement_scores),
    }
    return out


def run(*, quick: bool = False, model_cfg: dict | None = None, reps: int | None = None,
        threads: int = 2, extra_threads=(), log=print) -> dict:
    """The result file: ``masks_alone`` (``threads``), ``masks_alone_<n>thread`` (each of
    ``extra_threads``)."""
    reps = reps if reps is not None else (3 if quick else 20)

    def measure() -> dict:
        out = {}
        for n in (threads, *extra_threads):
            log(f"mask computation alone, {n} thread(s) ...")
            key = "masks_alone" + ("" if n == threads else f"_{n}thread")
            out[key] = _common.with_threads(
                n, lambda: bench_masks(model_cfg or _common.MINILM, reps=reps))
        return out

    return _common.record(__file__, quick=quick, threads=threads, measure=measure)


def table(result: dict) -> str:
    lines = []
    for key in [k for k in result if k.startswith("masks_alone")]:
        ma = result[key]
        lines.append(f"all masks once, {ma['threads']} thread(s), ms median/min: " + ", ".join(
            f"{k}={v['all_masks']['median_ms']:.1f}/{v['all_masks']['min_ms']:.1f}"
            for k, v in ma.items() if isinstance(v, dict) and "all_masks" in v))
        nc = ma["nan_check"]

        def f(name, nc=nc):
            x = nc[f"{name}_all_matrices"]
            return f"{x['median_ms']:.2f}/{x['min_ms']:.2f}"

        lines.append(f"  over {nc['matrices']} matrices, ms median/min: isnan().any() "
                     f"{f('isnan_any')}; topk_mask {f('topk_mask')} (before "
                     f"{f('topk_mask_before')}); numpy partition {f('numpy_partition')}, "
                     f"torch.kthvalue {f('torch_kthvalue')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    return _common.main(argv, __doc__, "mask_cost", run, table,
                        reps=dict(type=int, help="timed calls each (default 20)"))


if __name__ == "__main__":
    raise SystemExit(main())
