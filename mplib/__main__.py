"""Command line: ``python -m mplib run|sweep|grid|probe|summary|profiles`` (``python -m mplib -h``).

Examples::

    python -m mplib run --task rt --method movement --keep-ratio 0.1 --profile ci --output DIR
    python -m mplib run --task rt --method soft_movement --tau 0.1 --lam 50 --distill --profile cpu
    python -m mplib run --task rt --method magnitude --keep-ratio 0.1 --set epochs=8
    python -m mplib sweep results/recipes/specs/ci.json --output results/runs
    python -m mplib grid results/gpu/full_grid.json --output results/gpu --parallel 5 --deadline 5
    python -m mplib probe --task rt --profile cpu --set batch_size=16 --output results/probes
    python -m mplib summary results/recipes
    torchrun --nproc_per_node 2 -m mplib run --task rt --method movement --keep-ratio 0.1

Taught in: book/03_fine_pruning.ipynb ("How to scale up").
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import fields

SWEEP_HELP = """\
A sweep spec (JSON or YAML) names a grid; every combination is one run:

  {"task": "rt", "profile": "ci", "seeds": [0],
   "methods": ["magnitude", "movement"], "keep_ratios": [0.5, 0.1],
   "distill": [false, true], "dense": true, "scope": "local",
   "overrides": {"epochs": 2},
   "runs": [{"method": "soft_movement", "tau": 0.1, "lam": 10}]}

Top_v methods take every keep_ratios entry; soft_movement / l0 / threshold take taus x lams.
Runs whose result file exists in --output are skipped, so rerunning a killed sweep resumes it.
"""

GRID_HELP = """\
The runs of one or more sweep specs (format: python -m mplib sweep -h), --parallel N at a
time in worker processes (one GPU is shared by all of them), dense runs first. Runs whose
result file exists are skipped (rerun the command to resume); after --deadline minutes no run
starts, after --stop minutes the runs still going are stopped. One log per run in --logs
(default OUTPUT/logs), with grid-summary.json. Exit code 0 when every run has its result.
See mplib/lab/grid.py and results/gpu/README.md.
"""


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        words = {"true": True, "false": False, "none": None, "null": None}
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            # lower-case booleans as in YAML / JSON / shells; anything else stays a string
            value = words.get(raw.strip().lower(), raw)
        out[key.strip().replace("-", "_")] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    from .lab.profiles import PROFILES
    from .methods import METHODS

    p = argparse.ArgumentParser(prog="python -m mplib", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--profile", default=None, choices=sorted(PROFILES),
                        help="experiment scale (default: ci; for sweeps the spec's profile)")
        sp.add_argument("--output", default="results/runs", help="folder for result JSON files")
        sp.add_argument("--cache-dir", default="results/cache",
                        help="teachers and resumable checkpoints (default: results/cache)")
        sp.add_argument("--threads", type=int, default=None, help="torch threads per process")
        sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
        sp.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                        help="override a profile field, e.g. --set epochs=8 (repeatable)")
        sp.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")

    r = sub.add_parser("run", help="one fine-pruning run -> one result JSON")
    r.add_argument("--task", default="rt")
    r.add_argument("--method", required=True, choices=["dense", *sorted(METHODS)])
    r.add_argument("--keep-ratio", type=float, default=None,
                   help="fraction of encoder weights kept (Top_v methods), e.g. 0.1")
    r.add_argument("--tau", type=float, default=None, help="threshold (soft_movement, threshold)")
    r.add_argument("--lam", type=float, default=None, help="penalty weight (soft_movement, l0)")
    r.add_argument("--scope", choices=["local", "global"], default="local")
    r.add_argument("--distill", action="store_true", help="distil from the cached dense teacher")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--epochs", type=float, default=None, help="shortcut for --set epochs=...")
    r.add_argument("--force", action="store_true", help="run even if the result file exists")
    r.add_argument("--no-resume", action="store_true", help="ignore a saved checkpoint")
    common(r)

    s = sub.add_parser("sweep", help="a grid of runs from a JSON/YAML spec (resumable)",
                       description=SWEEP_HELP, formatter_class=argparse.RawTextHelpFormatter)
    s.add_argument("spec", help="sweep spec file (.json, .yaml)")
    s.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    common(s)

    g = sub.add_parser("grid", help="a sweep's runs in parallel worker processes (resumable)",
                       description=GRID_HELP, formatter_class=argparse.RawTextHelpFormatter)
    g.add_argument("spec", nargs="+", help="sweep spec file(s) (.json, .yaml), run in order")
    g.add_argument("--parallel", type=int, default=1, help="runs at a time (default 1)")
    g.add_argument("--deadline", type=float, default=None, metavar="MIN",
                   help="no new run starts after MIN minutes (running ones finish)")
    g.add_argument("--stop", type=float, default=None, metavar="MIN",
                   help="runs still going after MIN minutes are stopped")
    g.add_argument("--logs", default=None, help="folder of the per-run logs (OUTPUT/logs)")
    g.add_argument("--dry-run", action="store_true", help="list the runs in start order, exit")
    common(g)

    pr = sub.add_parser("probe", help="first-cut probe: one-shot movement / magnitude / random "
                        "masks after t dense steps (mplib.lab.probes)")
    pr.add_argument("--task", default="rt")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--steps", type=int, default=1200, help="dense fine-tuning steps")
    pr.add_argument("--warmup", type=int, default=106, help="LR warm-up steps")
    pr.add_argument("--at", default="25,50,106,150,200,300,500,800,1200",
                    help="comma-separated steps at which to cut (after that step's update)")
    pr.add_argument("--keeps", default="0.7,0.3", help="comma-separated keep ratios")
    common(pr)

    sub.add_parser("profiles", help="print the named profiles")
    sm = sub.add_parser("summary", help="one line per result JSON in a folder")
    sm.add_argument("folder", nargs="?", default="results/runs")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .lab import runner, sweeps, tables
    from .lab.profiles import PROFILES, Profile, get_profile

    if args.command == "summary":
        rows = [tables.summary_row(r) for r in tables.load_results(args.folder)]
        print(tables.format_table(rows, tables.SUMMARY_COLUMNS))
        return 0
    if args.command == "profiles":
        for name, prof in PROFILES.items():
            print(name, json.dumps(prof.to_dict()))
        print("fields:", ", ".join(f.name for f in fields(Profile)))
        return 0

    try:
        overrides = _parse_set(args.set)
        if args.threads is not None:
            overrides["threads"] = args.threads
        if args.device is not None:
            overrides["device"] = args.device
        if args.command == "probe":
            profile = args.profile or "cpu"
            get_profile(profile, **overrides)
            at = [int(t) for t in args.at.split(",")]
            keeps = [float(k) for k in args.keeps.split(",")]
        elif args.command == "run":
            if args.epochs is not None:
                overrides["epochs"] = args.epochs
            spec = runner.RunSpec(task=args.task, method=args.method, keep_ratio=args.keep_ratio,
                                  tau=args.tau, lam=args.lam, scope=args.scope,
                                  distill=args.distill, seed=args.seed, overrides=overrides)
            spec.pruning_config()
            profile = args.profile or "ci"
            get_profile(profile, **{k: v for k, v in overrides.items()})
        elif args.command == "grid":
            from .lab import grid

            if args.parallel < 1:
                raise ValueError(f"--parallel must be >= 1, got {args.parallel}")
            for flag, v in (("--deadline", args.deadline), ("--stop", args.stop)):
                if v is not None and v < 0:
                    raise ValueError(f"{flag} must be >= 0 minutes, got {v}")
            jobs = grid.plan_grid(args.spec, output=args.output, cache_dir=args.cache_dir,
                                  profile=args.profile, overrides=overrides,
                                  threads=grid.worker_threads(args.parallel))
        else:
            sweep = sweeps.load_spec_file(args.spec)
            if args.profile:
                sweep["profile"] = args.profile
            if overrides:
                sweep["overrides"] = {**(sweep.get("overrides") or {}), **overrides}
            profile, runs = sweeps.expand_sweep(sweep)
            get_profile(profile, **(sweep.get("overrides") or {}))
    except (ValueError, TypeError, FileNotFoundError) as err:
        parser.error(str(err))

    progress = not args.no_progress
    if args.command == "grid":
        if args.dry_run:
            for j in jobs:
                print(("exists " if j.path.exists() else "run    ") + str(j.path))
            return 0
        report = grid.run_grid(jobs, parallel=args.parallel, deadline=args.deadline,
                               stop=args.stop, output=args.output, cache_dir=args.cache_dir,
                               log_dir=args.logs, log=tables.main_print)
        tables.main_print(grid.format_report(report))
        return 0 if report["ok"] else 1
    if args.command == "probe":
        from .lab.probes import first_cut

        try:
            res = first_cut(args.task, profile, overrides=overrides, steps=args.steps,
                            warmup=args.warmup, at=at, keeps=keeps, seed=args.seed,
                            output=args.output, log=tables.main_print)
        except ValueError as err:
            parser.error(str(err))
        tables.main_print(f"result: {res['path']} ({res['wall_seconds']:.0f} s)")
        return 0
    if args.command == "run":
        path = runner.result_path(spec, profile, args.output)
        res = runner.run_experiment(spec, profile, output=args.output, cache_dir=args.cache_dir,
                                    progress=progress, resume=not args.no_resume,
                                    skip_existing=not args.force)
        tables.main_print(tables.summary_line(res))
        tables.main_print(f"result: {path}")
        return 0
    if args.dry_run:
        for r in runs:
            print(runner.result_path(r, profile, args.output))
        return 0
    sweeps.run_sweep(sweep, output=args.output, cache_dir=args.cache_dir, progress=progress,
                     log=tables.main_print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
