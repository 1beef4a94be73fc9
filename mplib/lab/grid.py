"""Grids: a sweep's runs in parallel worker processes, on one GPU or on the CPU; resumable.

:func:`plan_grid` expands one or more sweep specs (the format of :mod:`mplib.lab.sweeps`) into
:class:`Job` objects, validates every run and its profile before anything starts, drops
duplicates and puts the dense runs first (distillation runs need their teacher).
:func:`run_grid` then keeps up to ``parallel`` runs going at once:

* a run whose result file exists is **skipped**, so the same command restarted finishes the rest;
* a distillation run waits until the dense run that trains its teacher has ended, and two runs
  never train the same missing teacher at once;
* after ``deadline`` minutes no new run starts (the runs going on are finished and kept, the
  rest are reported as **left**); after ``stop`` minutes the runs still going are stopped;
* every run writes its own log, ``<logs>/<run_id>.log``; a line is printed as each run ends and
  a summary at the end (done / skipped / failed / stopped / left, wall time), which is also
  written to ``<logs>/grid-summary.json``;
* a failed run does not stop the others; the report's ``ok`` (the CLI's exit code) says whether
  every run has its result file.

Why one subprocess per run, ``python -m mplib.lab.grid`` reading its run from stdin, and not
``python -m mplib run`` or ``multiprocessing``: the parent resolves each run's profile once and
pipes the :class:`~mplib.lab.profiles.Profile` object itself (pickled) to the worker, so a
worker runs exactly what the plan (and ``--dry-run``) showed, also at profiles that are not in
the named table (the tests' tiny one), which ``python -m mplib run`` cannot name; a fresh
interpreter per run has its own CUDA context (forking a process that has touched CUDA is
unsafe) and gets its thread limits (``OMP_NUM_THREADS``) before torch is imported; unlike
``multiprocessing``'s spawn it does not re-run the caller's main script, which breaks scripts
and notebooks without a ``__main__`` guard; and a crash or an out-of-memory kill ends that run
only, its exit code says so, and a run can be stopped without touching the others. Processes on
one GPU share it with no ``CUDA_VISIBLE_DEVICES`` juggling; each gets a few torch threads
(``threads``: by default the machine's cores divided among the ``parallel`` workers, at most 4)
so the CPU is not oversubscribed. Workers draw no progress bars.

``python -m mplib grid SPEC [SPEC ...] --output DIR --parallel N [--deadline MIN] [--stop MIN]``
is the command line; ``results/gpu/README.md`` is how the full-depth grid runs on one GPU.

Taught in: book/11_reproducing.ipynb and book/14_scaling_out.ipynb
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Job", "format_report", "plan_grid", "run_grid", "worker_threads"]

STATUSES = ("done", "skipped", "failed", "stopped", "left")
"""How a run of a grid ended: ran and wrote its file, file already there, error, stopped by
``stop``, never started (``deadline``)."""


@dataclass
class Job:
    """One run of a grid: the run, the (named) profile it runs at, and what became of it."""

    run: object  # RunSpec
    profile: object  # Profile: the base profile; the run's overrides apply on top
    run_id: str
    path: Path
    teacher: str | None = None  # distillation: the teacher folder this run needs
    provides: str | None = None  # dense runs: the teacher folder this run writes
    status: str = "queued"
    exitcode: int | None = None
    seconds: float | None = None
    log: str | None = None
    summary: str | None = None
    extra: dict = field(default_factory=dict)  # started_at / ended_at (epoch seconds)


def worker_threads(parallel: int) -> int:
    """Torch threads per worker: the usable cores shared among ``parallel`` workers, 1 to 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores // max(1, parallel)))


def plan_grid(specs, *, output="results/runs", cache_dir="results/cache", profile=None,
              overrides=None, threads=None) -> list[Job]:
    """The jobs of the sweep specs ``specs`` (file paths or dicts), dense runs first.

    ``profile`` replaces every spec's profile, ``overrides`` are added to every spec's overrides
    (as ``python -m mplib sweep --profile/--set`` do). ``threads`` is set on runs whose profile
    leaves it open. Raises ``ValueError`` (unknown keys, methods, profile fields, bad values)
    before anything runs; a run named twice is kept once, where it first appears.
    """
    from .profiles import get_profile
    from .sweeps import expand_sweep, load_spec_file
    from .teachers import teacher_dir

    jobs: dict[str, Job] = {}
    for spec in [specs] if isinstance(specs, (str, os.PathLike, dict)) else specs:
        sweep = dict(spec) if isinstance(spec, dict) else load_spec_file(spec)
        if profile:
            sweep["profile"] = profile
        if overrides:
            sweep["overrides"] = {**(sweep.get("overrides") or {}), **overrides}
        name, runs = expand_sweep(sweep)
        base = get_profile(name)
        for run in runs:
            resolved = base.with_overrides(**run.overrides)  # every field valid before a start
            if threads and resolved.threads is None:
                run.overrides = {**run.overrides, "threads": threads}
            rid = run.run_id(name)
            if rid in jobs:
                continue
            where = str(teacher_dir(cache_dir, run.task, resolved, run.seed))
            jobs[rid] = Job(run=run, profile=base, run_id=rid, path=Path(output) / f"{rid}.json",
                            teacher=where if run.distill else None,
                            provides=where if run.method == "dense" and not run.distill
                            else None)
    ordered = list(jobs.values())
    return ([j for j in ordered if j.provides] + [j for j in ordered if not j.provides])


def _ready(job: Job, jobs: list[Job], running: list[Job]) -> bool:
    """May ``job`` start now? Only a distillation run can have to wait (for its teacher)."""
    if job.teacher is None:
        return True
    for other in jobs:
        if other is not job and other.provides == job.teacher and other.status in ("queued",
                                                                                  "running"):
            return False  # the dense run of this grid trains the teacher: wait for it
    if (Path(job.teacher) / "teacher.json").exists():
        return True
    return not any(o.teacher == job.teacher for o in running)  # one run trains a missing one


def _launch(job: Job, output, cache_dir) -> subprocess.Popen:
    """Start ``python -m mplib.lab.grid`` for ``job``: output to its log, the run on stdin."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")  # the tokenizer's pool: one per process
    threads = job.profile.with_overrides(**job.run.overrides).threads
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the mplib package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with open(job.log, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mplib.lab.grid"], stdin=subprocess.PIPE,
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        proc.stdin.write(pickle.dumps(dict(run=job.run, profile=job.profile,
                                           output=str(output), cache_dir=str(cache_dir))))
        proc.stdin.close()
    except BrokenPipeError:  # pragma: no cover - the worker died at start; its exit code says
        pass
    return proc


def _worker_main() -> None:
    """A worker process: read its run from stdin, run it, write the result file."""
    job = pickle.load(sys.stdin.buffer)
    run, profile = job["run"], job["profile"]
    threads = profile.with_overrides(**run.overrides).threads
    import torch

    from .runner import run_experiment
    from .tables import summary_line

    if threads:
        torch.set_num_threads(threads)
    print(f"== {run.run_id(profile.name)}  pid {os.getpid()}  "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}  torch threads {torch.get_num_threads()}")
    res = run_experiment(run, profile, output=job["output"], cache_dir=job["cache_dir"],
                         progress=False)
    print(summary_line(res))


def _stop(proc, grace: float = 10.0) -> None:
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:  # pragma: no cover - ignored SIGTERM
        proc.kill()
        proc.wait()


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s"


def run_grid(jobs: list[Job], *, parallel: int = 1, deadline: float | None = None,
             stop: float | None = None, output="results/runs", cache_dir="results/cache",
             log_dir=None, log=print) -> dict:
    """Run ``jobs`` (from :func:`plan_grid`) with up to ``parallel`` worker processes at once.

    ``deadline``: minutes after which no new run starts; ``stop``: minutes after which runs still
    going are terminated (both from this call's start; None: no limit). Returns the report
    (``format_report`` prints it); ``report["ok"]`` is True when every run has its result file.
    """
    import signal
    import threading

    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    for name, v in (("deadline", deadline), ("stop", stop)):
        if v is not None and v < 0:
            raise ValueError(f"{name} must be >= 0 minutes, got {v}")
    log_dir = Path(log_dir) if log_dir is not None else Path(output) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    Path(output).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    limit_start = None if deadline is None else t0 + 60 * deadline
    limit_stop = None if stop is None else t0 + 60 * stop
    running: dict = {}  # process -> (job, start time)
    queue = list(jobs)
    for j in queue:
        if j.path.exists():
            j.status = "skipped"
    queue = [j for j in queue if j.status != "skipped"]
    n = len(jobs)

    def counts() -> dict:
        return {s: sum(j.status == s for j in jobs) for s in (*STATUSES, "running", "queued")}

    def finished(job: Job, proc, started: float, stopped: bool = False) -> None:
        job.exitcode, job.seconds = proc.returncode, time.monotonic() - started
        job.extra["ended_at"] = time.time()
        if stopped:
            job.status = "stopped"
        elif proc.returncode == 0 and job.path.exists():
            job.status = "done"
            from .tables import summary_line

            job.summary = summary_line(json.loads(job.path.read_text()))
        else:
            job.status = "failed"
        c = counts()
        what = job.summary or f"{job.run_id}: exit code {job.exitcode}, see {job.log}"
        log(f"[{_clock(time.monotonic() - t0)}] {job.status} ({_clock(job.seconds)}) "
            f"{c['done'] + c['skipped']}/{n} have results, {c['failed']} failed, "
            f"{c['running']} running, {c['queued']} queued | {what}")

    interrupted = []
    previous = None
    if threading.current_thread() is threading.main_thread():  # `timeout`, `kill`: clean stop
        def on_term(signum, frame):
            interrupted.append(signum)
            raise KeyboardInterrupt
        previous = signal.signal(signal.SIGTERM, on_term)
    c = counts()
    log(f"grid: {n} runs, {c['skipped']} with results already, {len(queue)} to run, "
        f"{parallel} at a time" + (f", no new start after {deadline:g} min" if deadline is not None
                                   else "") + (f", stop at {stop:g} min" if stop is not None
                                               else "") + f"; logs in {log_dir}")
    try:
        while queue or running:
            now = time.monotonic()
            if limit_stop is not None and now >= limit_stop and running:
                for proc, (job, started) in list(running.items()):
                    _stop(proc)
                    del running[proc]
                    finished(job, proc, started, stopped=True)
                break
            may_start = limit_start is None or now < limit_start
            if limit_stop is not None and now >= limit_stop:
                may_start = False
            while may_start and queue and len(running) < parallel:
                job = next((j for j in queue
                            if _ready(j, jobs, [r[0] for r in running.values()])), None)
                if job is None:
                    break
                queue.remove(job)
                if job.path.exists():  # written meanwhile (a distillation run's teacher)
                    job.status = "skipped"
                    continue
                job.log = str(log_dir / f"{job.run_id}.log")
                proc = _launch(job, output, cache_dir)
                job.status, job.extra["started_at"] = "running", time.time()
                running[proc] = (job, time.monotonic())
            if not running:
                break  # nothing may start (deadline, stop) or can start
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                job, started = running.pop(proc)
                finished(job, proc, started)
    except KeyboardInterrupt:
        for proc, (job, started) in list(running.items()):
            _stop(proc)
            finished(job, proc, started, stopped=True)
        running.clear()
        if not interrupted:
            interrupted.append("SIGINT")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    for j in queue:
        j.status = "left"
    report = dict(
        ok=all(j.status in ("done", "skipped") for j in jobs),
        wall_seconds=time.monotonic() - t0, parallel=parallel, deadline_min=deadline,
        stop_min=stop, interrupted=bool(interrupted), counts=counts(),
        runs=[dict(run_id=j.run_id, status=j.status, exitcode=j.exitcode, seconds=j.seconds,
                   log=j.log, result=str(j.path), **j.extra) for j in jobs])
    from .env import write_json

    write_json(log_dir / "grid-summary.json", report)
    return report


def format_report(report: dict) -> str:
    """The grid's final summary: counts, wall time, and the runs that have no result file."""
    c = report["counts"]
    lines = [f"grid summary: {c['done']} done, {c['skipped']} skipped (results existed), "
             f"{c['failed']} failed, {c['stopped']} stopped, {c['left']} left (not started); "
             f"wall {_clock(report['wall_seconds'])}"
             + ("; interrupted" if report.get("interrupted") else "")]
    for r in report["runs"]:
        if r["status"] in ("failed", "stopped"):
            lines.append(f"  {r['status']}: {r['run_id']} (exit code {r['exitcode']}, log "
                         f"{r['log']})")
    left = [r["run_id"] for r in report["runs"] if r["status"] == "left"]
    if left:
        lines.append(f"  left: {' '.join(left)}")
    lines.append("all runs have results" if report["ok"] else
                 "not every run has a result; the same command resumes the rest")
    return "\n".join(lines)


if __name__ == "__main__":
    _worker_main()
