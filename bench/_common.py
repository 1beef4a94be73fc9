"""What the benchmarks under ``bench/`` share: model shapes, timing statistics, the load average,
the command line and the result file.

Not a benchmark itself. Each ``bench/bench_*.py`` imports it as ``import _common`` (a script's
own folder is on ``sys.path`` when it is run as ``python bench/<file>.py``). Facts about the
machine and the package versions come from :mod:`mplib.lab.env`, so every result file of the
project describes its hardware the same way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mplib.lab.env import hardware, versions, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench"

MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
              intermediate_size=1536, max_position_embeddings=512)
"""all-MiniLM-L6-v2's shapes (22.7 M parameters; 36 prunable matrices, 10.6 M entries)."""

TINY = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64)
"""A one-layer model for smoke tests (``--model tiny``); its timings mean nothing."""

MODELS = {"minilm": MINILM, "tiny": TINY}


def loadavg() -> list[float]:
    """The 1-, 5- and 15-minute load averages (empty where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def summary(times_s: list[float]) -> dict:
    """Count, median, quartiles, IQR, minimum and maximum of durations, in milliseconds."""
    ms = sorted(t * 1e3 for t in times_s)
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        q1 = q3 = ms[0]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 3),
            "q1_ms": round(q1, 3), "q3_ms": round(q3, 3), "iqr_ms": round(q3 - q1, 3),
            "min_ms": round(ms[0], 3), "max_ms": round(ms[-1], 3)}


def with_threads(n: int, fn: Callable[[], dict]) -> dict:
    """``fn()`` run with ``n`` torch threads (restored afterwards); ``threads`` added to it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        out = fn()
    finally:
        torch.set_num_threads(before)
    out["threads"] = n
    return out


def parse(argv, doc: str, name: str, **options: dict) -> argparse.Namespace:
    """The options every benchmark takes, plus ``options`` (``rounds=dict(type=int)`` adds
    ``--rounds``); ``name`` names the default result file."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few repetitions only (smoke test)")
    ap.add_argument("--out", default=str(RESULTS / f"{name}.json"), help="result file (JSON)")
    ap.add_argument("--model", choices=sorted(MODELS), default="minilm",
                    help="model shapes (tiny: smoke tests only)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the main run")
    ap.add_argument("--extra-threads", type=int, default=1,
                    help="also measure with this many threads (0: don't; not with --quick)")
    for dest, kwargs in options.items():
        ap.add_argument("--" + dest.replace("_", "-"), **kwargs)
    return ap.parse_args(argv)


def run_options(args: argparse.Namespace) -> dict:
    """``quick``, ``threads`` and ``extra_threads`` (none with ``--quick``) for ``run``."""
    extra = () if args.quick or args.extra_threads == 0 else (args.extra_threads,)
    return dict(quick=args.quick, threads=args.threads, extra_threads=extra)


def record(script: str, *, quick: bool, threads: int,
           measure: Callable[[], dict]) -> dict:
    """Run ``measure`` with ``threads`` torch threads and wrap what it returns with the facts a
    result needs: script, versions, hardware, load average before and after, wall time."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    result = {"benchmark": f"bench/{Path(script).name}", "quick": quick,
              "versions": versions(), "hardware": hardware("cpu"), "loadavg_start": loadavg()}
    result.update(measure())
    result["loadavg_end"] = loadavg()
    result["wall_time_s"] = round(time.perf_counter() - t0, 1)
    return result


def finish(result: dict, out: str | Path, table: Callable[[dict], str]) -> int:
    """Write the result file, print ``table(result)``; the exit status of ``main``."""
    path = write_json(out, result)
    print(table(result))
    print(f"load: start {result['loadavg_start']}, end {result['loadavg_end']}; "
          f"wall {result['wall_time_s']} s")
    print(f"wrote {path}")
    return 0


def main(argv, doc: str, name: str, run: Callable[..., dict], table: Callable[[dict], str],
         **options: dict) -> int:
    """The command line of a benchmark on a model: parse, ``run`` (given ``model_cfg``, the
    common options and each of ``options``), write, print."""
    args = parse(argv, doc, name, **options)
    result = run(model_cfg=MODELS[args.model], **run_options(args),
                 **{dest: getattr(args, dest) for dest in options})
    return finish(result, args.out, table)
