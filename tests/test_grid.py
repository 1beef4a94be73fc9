"""The GPU grid's code path, dry-run on the CPU: ``python -m mplib grid`` on a tiny offline
encoder and toy task, two worker processes at a time -- result files with the runner's keys,
dense before distillation, a failed run reported without stopping the others, resumption,
``--deadline 0`` and the shipped GPU specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _train_helpers import save_tiny_encoder, write_tiny_task

from mplib.__main__ import main
from mplib.lab import profiles
from mplib.lab.grid import plan_grid
from mplib.lab.runner import RESULT_KEYS

GPU = Path(__file__).resolve().parents[1] / "results" / "gpu"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A registered profile ``tiny`` (tiny BERT, toy task; as in test_runner.py) and folders."""
    monkeypatch.setenv("MPLIB_CACHE", str(tmp_path / "mplib-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = save_tiny_encoder(tmp_path / "enc")
    task = write_tiny_task(tmp_path / "toy", n_train=32, n_eval=8)
    prof = profiles.Profile(name="tiny", model=str(enc), max_length=16, batch_size=8,
                            eval_batch_size=16, epochs=1, lr=1e-2, log_every=2, threads=1,
                            device="cpu")
    monkeypatch.setitem(profiles.PROFILES, "tiny", prof)
    out = tmp_path / "out"
    return dict(task=str(task), out=out, cache=tmp_path / "cache", dir=tmp_path,
                args=["--output", str(out), "--cache-dir", str(tmp_path / "cache")])


def _spec(tiny, name, **spec) -> str:
    path = tiny["dir"] / name
    path.write_text(json.dumps({"task": tiny["task"], "profile": "tiny", **spec}))
    return str(path)


def test_grid_runs_in_parallel_resumes_and_reports_failures(tiny, capsys):
    good = _spec(tiny, "good.json", methods=["magnitude"], keep_ratios=[0.5],
                 runs=[{"method": "movement", "keep_ratio": 0.5, "distill": True},
                       {"method": "dense"}])  # the teacher comes last here: the grid reorders
    bad = _spec(tiny, "bad.json", runs=[{"method": "magnitude", "keep_ratio": 0.5,
                                         "task": str(tiny["dir"] / "no-such-task")}])
    assert main(["grid", good, bad, *tiny["args"], "--dry-run"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed[:2] == ["run", str(tiny["out"] / "tiny-toy-dense-seed0.json")]
    assert len(listed) == 8 and not tiny["out"].exists()

    assert main(["grid", good, bad, *tiny["args"], "--parallel", "2"]) == 1  # one run failed
    out = capsys.readouterr().out
    names = ["tiny-toy-dense-seed0", "tiny-toy-magnitude-keep0.5-seed0",
             "tiny-toy-movement-keep0.5-distil-seed0"]
    for name in names:
        res = json.loads((tiny["out"] / f"{name}.json").read_text())
        assert tuple(res) == RESULT_KEYS and res["run_id"] == name
        assert res["hardware"]["torch_threads"] == 1
        assert name in (tiny["out"] / "logs" / f"{name}.log").read_text()
    assert "failed" in out and "3/4 have results" in out
    assert "grid summary: 3 done, 0 skipped (results existed), 1 failed, 0 stopped, 0 left" in out
    report = json.loads((tiny["out"] / "logs" / "grid-summary.json").read_text())
    runs = {r["run_id"]: r for r in report["runs"]}
    (failed,) = [r for r in report["runs"] if r["status"] == "failed"]
    assert "no-such-task" in failed["run_id"] and failed["exitcode"] != 0
    assert "Traceback" in Path(failed["log"]).read_text()
    dense, distil = runs[names[0]], runs[names[2]]
    assert distil["started_at"] >= dense["ended_at"]  # the teacher first
    spans = sorted((r["started_at"], r["ended_at"]) for r in report["runs"])
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))  # 2 at once ...
    for t in {s for s, _ in spans}:  # ... and never more
        assert sum(s <= t < e for s, e in spans) <= 2

    stamps = {p.name: p.stat().st_mtime_ns for p in tiny["out"].glob("*.json")}
    assert main(["grid", good, *tiny["args"], "--parallel", "2"]) == 0  # resumed: all skipped
    out = capsys.readouterr().out
    assert "grid summary: 0 done, 3 skipped" in out and "all runs have results" in out
    assert {p.name: p.stat().st_mtime_ns for p in tiny["out"].glob("*.json")} == stamps


def test_deadline_zero_starts_nothing_and_stop_ends_runs(tiny, capsys):
    spec = _spec(tiny, "spec.json", dense=True, methods=["magnitude"], keep_ratios=[0.5])
    assert main(["grid", spec, *tiny["args"], "--parallel", "2", "--deadline", "0"]) == 1
    out = capsys.readouterr().out
    assert "0 done, 0 skipped (results existed), 0 failed, 0 stopped, 2 left" in out
    assert "left: tiny-toy-dense-seed0 tiny-toy-magnitude-keep0.5-seed0" in out
    assert not list(tiny["out"].glob("*.json"))
    # a hard stop after ~2 s ends the run going (a long one) and starts nothing more
    args = ["--parallel", "1", "--stop", "0.03", "--set", "epochs=500"]
    assert main(["grid", spec, *tiny["args"], *args]) == 1
    out = capsys.readouterr().out
    assert "0 done, 0 skipped (results existed), 0 failed, 1 stopped, 1 left" in out
    assert not list(tiny["out"].glob("*.json"))


def test_grid_errors_are_clear(tiny, capsys):
    spec = _spec(tiny, "spec.json", methods=["magnitude"], keep_ratios=[0.5])
    for args, message in [(["--parallel", "0"], "--parallel must be >= 1"),
                          (["--deadline", "-1"], "--deadline must be >= 0"),
                          (["--set", "epoch=2"], "unknown profile field(s) ['epoch']")]:
        with pytest.raises(SystemExit) as err:
            main(["grid", spec, *tiny["args"], *args])
        assert err.value.code == 2 and message in capsys.readouterr().err
    bad = _spec(tiny, "bad.json", runs=[{"method": "magnitude", "keep_ratio": 0.5,
                                         "overrides": {"batch_size": 0}}])
    with pytest.raises(SystemExit):  # a run's own overrides are checked before any start
        main(["grid", bad, *tiny["args"]])
    assert "batch_size must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["full_grid.json", "full_grid_seeds12.json"])
def test_the_gpu_specs_expand(name):
    jobs = plan_grid(GPU / name, output=GPU, threads=3)
    ids = [j.run_id for j in jobs]
    assert len(ids) == len(set(ids)) and all(i.startswith("full-rt-") for i in ids)
    assert all(j.run.overrides == {"threads": 3} for j in jobs)  # no change to the run ids
    assert [j.run.method for j in jobs][: len({j.run.seed for j in jobs})] == \
        ["dense"] * len({j.run.seed for j in jobs})
    methods = {(j.run.method, j.run.keep_ratio) for j in jobs}
    assert {("movement", 0.1), ("movement", 0.03), ("magnitude", 0.1), ("magnitude", 0.03),
            ("random", 0.1)} <= methods
    assert sum(j.run.method == "soft_movement" for j in jobs) >= 3 * len({j.run.seed
                                                                          for j in jobs})
