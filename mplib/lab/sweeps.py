"""Sweeps: a grid of runs from one JSON/YAML spec, run one after the other, resumable.

A spec names tasks, methods, keep ratios / taus / lams, seeds, distillation and profile
overrides; :func:`expand_sweep` turns it into :class:`~mplib.lab.runner.RunSpec` objects (every
run validated before the first starts) and :func:`run_sweep` runs those whose result file does
not exist yet, so a killed sweep restarted with the same command finishes the rest. See
``python -m mplib sweep -h`` for the format.

Taught in: book/03_fine_pruning.ipynb ("How to scale up").
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from .. import distributed as D
from ..methods import METHODS, get_method
from .profiles import get_profile
from .runner import RunSpec, broadcast, result_path, run_experiment
from .tables import summary_line

__all__ = ["SWEEP_KEYS", "expand_sweep", "load_spec_file", "pending_runs", "run_sweep"]


def load_spec_file(path) -> dict:
    """Read a sweep spec from JSON or YAML (``.yaml``/``.yml`` needs PyYAML)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover
            raise SystemExit("YAML sweep specs need PyYAML (pip install pyyaml); or use JSON") \
                from None
        return yaml.safe_load(text)
    return json.loads(text)


def _as_list(v, default):
    if v is None:
        return list(default)
    return list(v) if isinstance(v, (list, tuple)) else [v]


SWEEP_KEYS = ("task", "tasks", "profile", "methods", "keep_ratios", "taus", "lams", "scope",
              "seeds", "distill", "dense", "overrides", "runs")


def expand_sweep(spec: dict) -> tuple[str, list[RunSpec]]:
    """The profile name and the list of runs of a sweep spec (see ``python -m mplib sweep -h``).

    Top_v methods take every ``keep_ratios`` entry; soft_movement / l0 / threshold take every
    ``taus`` x ``lams`` entry that applies. ``dense: true`` adds the dense run of every seed;
    ``runs`` adds explicit runs (dicts of :class:`RunSpec` fields).
    """
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        raise ValueError(f"unknown sweep key(s) {unknown}; known: {list(SWEEP_KEYS)}")
    profile = spec.get("profile", "ci")
    prof = get_profile(profile)
    tasks = _as_list(spec.get("tasks", spec.get("task")), ["rt"])
    seeds = _as_list(spec.get("seeds"), prof.seeds)
    distills = [bool(d) for d in _as_list(spec.get("distill"), [False])]
    overrides = dict(spec.get("overrides") or {})
    scope = spec.get("scope", "local")
    runs: list[RunSpec] = []
    for task, seed in itertools.product(tasks, seeds):
        if spec.get("dense"):
            runs.append(RunSpec(task=task, method="dense", seed=seed, overrides=overrides))
        for method, distill in itertools.product(_as_list(spec.get("methods"), []), distills):
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r} in sweep; known {sorted(METHODS)}")
            knobs = get_method(method).knobs
            keeps = _as_list(spec.get("keep_ratios"), [None]) if "keep_ratio" in knobs else [None]
            taus = _as_list(spec.get("taus"), [None]) if "tau" in knobs else [None]
            lams = _as_list(spec.get("lams"), [None]) if "lam" in knobs else [None]
            for k, t, lam in itertools.product(keeps, taus, lams):
                runs.append(RunSpec(task=task, method=method, keep_ratio=k, tau=t, lam=lam,
                                    scope=scope if "keep_ratio" in knobs else "local",
                                    distill=distill,
                                    seed=seed, overrides=overrides))
        for extra in spec.get("runs") or []:
            fields_ = dict(task=task, seed=seed, overrides=overrides)
            fields_.update(extra)
            runs.append(RunSpec(**fields_))
    for r in runs:
        r.pruning_config()  # every run is valid before the first one starts
    return profile, runs


def run_sweep(spec: dict, *, output="results/runs", cache_dir="results/cache",
              progress: bool = True, log=print) -> list[dict]:
    """Run every run of ``spec`` in order, skipping those whose result file already exists."""
    profile, runs = expand_sweep(spec)
    results = []
    for i, r in enumerate(runs, 1):
        path = result_path(r, profile, output)
        exists = broadcast(path.exists())
        if D.is_main():
            log(f"[{i}/{len(runs)}] {r.run_id(profile)}" + (" (exists, skipped)" if exists
                                                             else ""))
        res = run_experiment(r, profile, output=output, cache_dir=cache_dir, progress=progress)
        results.append(res)
        if D.is_main() and not exists:
            log("    " + summary_line(res))
    return results


def pending_runs(spec_files, folder) -> list[str]:
    """Run ids that the sweep specs ``spec_files`` name but ``folder`` holds no result file for."""
    expected = set()
    for path in spec_files:
        profile, runs = expand_sweep(load_spec_file(path))
        expected |= {r.run_id(profile) for r in runs}
    return sorted(r for r in expected if not (Path(folder) / f"{r}.json").exists())
