"""Result files as tables: one headline row per run, plain-text tables, and reading folders.

The runner writes one JSON per run (:mod:`mplib.lab.runner`); chapters and the CLI's
``summary`` read them through :func:`load_results` and show :func:`summary_row` dicts, so no
chapter re-implements the table.

Taught in: book/03_fine_pruning.ipynb (the result files).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import distributed as D

__all__ = ["SUMMARY_COLUMNS", "format_table", "load_results", "main_print", "summary_line",
           "summary_row", "variant"]


def load_results(folder, pattern: str = "*.json") -> list[dict]:
    """Every runner result file in ``folder`` matching ``pattern``, sorted by file name.

    Files that are not run results (sweep specs, probe files) are skipped.
    """
    found = [json.loads(p.read_text()) for p in sorted(Path(folder).glob(pattern))]
    return [r for r in found if isinstance(r, dict) and "run_id" in r and "metrics" in r]


def summary_line(res: dict) -> str:
    """One line per run for logs: validation, test, remaining fraction, time."""
    m = res["metrics"]
    rem_s = ("dense" if res["spec"]["method"] == "dense"
             else f"remaining {res['remaining']['global']:.3f}")
    return (f"{res['run_id']}: val {m['validation']['accuracy']:.4f} test "
            f"{m['test']['accuracy']:.4f} {rem_s} ({res['wall_seconds']:.0f} s, "
            f"{res['step_seconds']:.3f} s/step)")


def variant(res: dict) -> str:
    """The profile fields a run changed that change its result, as ``k=v ...`` (or ``-``)."""
    from .spec import NOT_IN_RUN_ID

    over = {k: v for k, v in res["spec"]["overrides"].items() if k not in NOT_IN_RUN_ID}
    return " ".join(f"{k}={v}" for k, v in sorted(over.items())) or "-"


def summary_row(res: dict) -> dict:
    """The headline numbers of one result file (for tables and the book)."""
    spec, m, rem, prof, hw = (res["spec"], res["metrics"], res["remaining"], res["profile"],
                              res["hardware"])
    layers = 6 if prof["num_layers"] is None else prof["num_layers"]  # 0: the no-encoder floor
    return dict(run_id=res["run_id"], profile=prof["name"], variant=variant(res),
                layers=layers, method=spec["method"], keep=spec["keep_ratio"],
                distill=spec["distill"], seed=spec["seed"], steps=res["train"]["total_steps"],
                pruning=res["schedule"]["pruning_steps"], val=m["validation"]["accuracy"],
                test=m["test"]["accuracy"], test_n=m["test"]["examples"],
                remaining=rem["global"], of_all=rem["of_all_parameters"],
                step_s=res["step_seconds"], cpu_s=res.get("train_cpu_seconds"),
                wall_s=res["wall_seconds"],
                hardware=hw["cuda_device"] or f"{hw['cpu']}, {hw['torch_threads']} thread(s)")


SUMMARY_COLUMNS = ("run_id", "method", "keep", "distill", "steps", "val", "test", "remaining",
                   "of_all", "step_s", "cpu_s", "wall_s")
"""The columns ``python -m mplib summary`` prints."""


def format_table(rows: list[dict], columns=None) -> str:
    """Plain-text table of :func:`summary_row` dicts (``columns``: which, in order; all if None)."""
    if not rows:
        return "(no result files)"
    head = list(columns or rows[0])

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4f}" if v <= 1 else f"{v:.1f}"
        return "-" if v is None else str(v)

    table = [head] + [[cell(r[k]) for k in head] for r in rows]
    width = [max(len(line[i]) for line in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, width, strict=True))
                     for line in table)


def main_print(*args) -> None:
    if D.is_main():
        print(*args, file=sys.stdout, flush=True)
