"""The experiment runner and its CLI on a tiny offline encoder and task: one JSON per run with
the documented keys, sweeps that skip finished runs, a cached distillation teacher, clear
errors."""

from __future__ import annotations

import json

import pytest

from mplib.__main__ import main
from mplib.lab import profiles
from mplib.lab.runner import RESULT_KEYS, RunSpec, run_experiment, teacher_dir
from mplib.lab.sweeps import run_sweep

# the runner sets the thread count itself (checked below): restore it, do not preset it
pytestmark = pytest.mark.usefixtures("restore_threads")  # tests/conftest.py


@pytest.fixture
def tiny(tmp_path, monkeypatch, tiny_profile):
    """A registered profile ``tiny`` (tiny BERT, toy task) and the task folder."""
    monkeypatch.setenv("MPLIB_CACHE", str(tmp_path / "mplib-cache"))
    task = tiny_profile(48, epochs=2, lr=1e-2, log_every=3, checkpoint_every=4)
    return dict(task=str(task), out=tmp_path / "out", cache=tmp_path / "cache")


def _cli(tiny, *args):
    return main(["run", "--task", tiny["task"], "--profile", "tiny", "--output", str(tiny["out"]),
                 "--cache-dir", str(tiny["cache"]), "--no-progress", *args])


def test_run_writes_one_json_with_the_documented_keys(tiny, capsys):
    assert _cli(tiny, "--method", "movement", "--keep-ratio", "0.25", "--seed", "1") == 0
    path = tiny["out"] / "tiny-toy-movement-keep0.25-seed1.json"
    assert str(path) in capsys.readouterr().out
    res = json.loads(path.read_text())
    assert tuple(res) == RESULT_KEYS
    assert res["spec"]["method"] == "movement" and res["config"]["keep_ratio"] == 0.25
    assert res["profile"]["name"] == "tiny" and res["profile"]["batch_size"] == 8
    for split in ("validation", "test"):
        assert 0.0 <= res["metrics"][split]["accuracy"] <= 1.0
        assert res["metrics"][split]["loss"] > 0 and res["metrics"][split]["examples"] == 16
    rem = res["remaining"]
    assert rem["global"] == pytest.approx(0.25, abs=2 / 256)
    assert set(rem["per_layer"]) == {"0", "1"} and 0.25 < rem["of_all_parameters"] < 1
    assert rem["kept_weights"] / rem["targeted_weights"] == rem["global"]
    sched = res["schedule"]
    assert sched["final"]["keep_ratio"] == 0.25 and res["train"]["total_steps"] == 12
    assert sched["warmup_steps"] + sched["pruning_steps"] + sched["cooldown_steps"] == 12
    assert [r["step"] for r in res["history"]] == [3, 6, 9, 12]
    assert all("remaining" in r and "keep_ratio" in r for r in res["history"])
    assert set(res["versions"]) == {"python", "torch", "transformers", "datasets", "mplib"}
    assert {"platform", "cpu", "cuda_device", "device", "torch_threads"} <= set(res["hardware"])
    assert res["hardware"]["torch_threads"] == 1
    assert res["wall_seconds"] > res["train_seconds"] > 0 and res["step_seconds"] > 0
    assert res["distillation"] is None and res["resumed_from"] is None
    assert not (tiny["cache"] / "runs" / res["run_id"]).exists()  # checkpoint removed when done
    assert main(["summary", str(tiny["out"])]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["run_id", "method", "keep"]
    assert table[1].startswith("tiny-toy-movement-keep0.25-seed1  movement  0.2500")


def test_sweep_skips_finished_runs_and_resumes(tiny):
    spec = {"task": tiny["task"], "profile": "tiny", "dense": True,
            "methods": ["magnitude", "soft_movement"], "keep_ratios": [0.5], "lams": [1.0]}
    logs = []
    run_sweep(spec, output=tiny["out"], cache_dir=tiny["cache"], progress=False, log=logs.append)
    files = sorted(p.name for p in tiny["out"].glob("*.json"))
    assert files == ["tiny-toy-dense-seed0.json", "tiny-toy-magnitude-keep0.5-seed0.json",
                     "tiny-toy-soft_movement-lam1-seed0.json"]
    stamp = {p.name: p.stat().st_mtime_ns for p in tiny["out"].glob("*.json")}
    (tiny["out"] / files[1]).unlink()  # as if the sweep had been killed during that run
    logs.clear()
    run_sweep(spec, output=tiny["out"], cache_dir=tiny["cache"], progress=False, log=logs.append)
    assert sum("skipped" in line for line in logs) == 2
    assert (tiny["out"] / files[1]).exists()
    for name in (files[0], files[2]):
        assert (tiny["out"] / name).stat().st_mtime_ns == stamp[name]


def test_distillation_trains_the_teacher_once_and_reuses_it(tiny):
    run = dict(output=tiny["out"], cache_dir=tiny["cache"], progress=False)
    first = run_experiment(RunSpec(task=tiny["task"], method="magnitude", keep_ratio=0.5,
                                   distill=True), "tiny", **run)
    where = teacher_dir(tiny["cache"], tiny["task"], profiles.PROFILES["tiny"], 0)
    stamp = (where / "teacher.json").stat().st_mtime_ns
    assert (tiny["out"] / "tiny-toy-dense-seed0.json").exists()  # the teacher's own result
    assert first["distillation"] == dict(teacher="tiny-toy-dense-seed0", temperature=2.0,
                                         alpha_distil=0.9, alpha_task=0.1)
    assert "teacher" in first["metrics"]
    run_experiment(RunSpec(task=tiny["task"], method="movement", keep_ratio=0.5, distill=True),
                   "tiny", **run)
    assert (where / "teacher.json").stat().st_mtime_ns == stamp


def test_structured_options_reach_the_method_and_name_the_run(tiny):
    """head_size / block_size travel from RunSpec to PruningConfig and into the file name; a
    head_movement run keeps whole heads (tiny BERT: 2 heads of width 8)."""
    res = run_experiment(RunSpec(task=tiny["task"], method="head_movement", keep_ratio=0.5,
                                 head_size=8), "tiny", output=tiny["out"],
                         cache_dir=tiny["cache"], progress=False)
    assert res["run_id"] == "tiny-toy-head_movement-keep0.5-head8-seed0"
    assert (tiny["out"] / f"{res['run_id']}.json").exists()
    assert res["config"]["head_size"] == 8 and res["spec"]["head_size"] == 8
    assert res["anatomy"] is None  # no per-weight scores to sample
    for name, kept in res["remaining"]["per_matrix"].items():
        if name.endswith("attention.self.value"):  # 16x16, one head of 8 rows kept of 2
            assert kept == 0.5, (name, kept)
    assert RunSpec(method="block_movement", keep_ratio=0.5, block_size=[4, 2]).run_id("ci") == \
        "ci-rt-block_movement-keep0.5-block4x2-seed0"
    assert RunSpec(method="block_movement", keep_ratio=0.5,
                   block_size=4).pruning_config().block_size == (4, 4)
    with pytest.raises(ValueError, match="needs head_size"):
        RunSpec(method="head_movement", keep_ratio=0.5).pruning_config()
    with pytest.raises(ValueError, match="does not use head_size"):
        RunSpec(method="movement", keep_ratio=0.5, head_size=8).pruning_config()
    with pytest.raises(ValueError, match="does not prune"):
        RunSpec(method="dense", head_size=8).pruning_config()


@pytest.mark.parametrize("args,message", [
    (["--method", "movement"], "needs keep_ratio"),
    (["--method", "soft_movement", "--keep-ratio", "0.1"], "does not take keep_ratio"),
    (["--method", "dense", "--keep-ratio", "0.1"], "does not prune"),
    (["--method", "magnitude", "--keep-ratio", "1.5"], "must be in (0, 1]"),
    (["--method", "magnitude", "--keep-ratio", "0.1", "--set", "epoch=3"], "unknown profile"),
    (["--method", "magnitude", "--keep-ratio", "0.1", "--set", "warmup_frac=0.9"], "< 1"),
])
def test_cli_errors_are_clear(tiny, capsys, args, message):
    with pytest.raises(SystemExit) as err:
        _cli(tiny, *args)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_sweep_spec_errors(tiny, tmp_path, capsys):
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"profile": "tiny", "methods": ["movment"]}))
    with pytest.raises(SystemExit):
        main(["sweep", str(spec), "--output", str(tiny["out"])])
    assert "unknown method 'movment'" in capsys.readouterr().err
    spec.write_text(json.dumps({"profile": "tiny", "method": ["movement"]}))
    with pytest.raises(SystemExit):
        main(["sweep", str(spec)])
    assert "unknown sweep key(s) ['method']" in capsys.readouterr().err
    spec.write_text(json.dumps({"profile": "tiny", "methods": ["movement"],
                                "keep_ratios": [0.5, 0.1]}))
    assert main(["sweep", str(spec), "--dry-run", "--output", "o"]) == 0
    assert capsys.readouterr().out.split() == ["o/tiny-rt-movement-keep0.5-seed0.json",
                                               "o/tiny-rt-movement-keep0.1-seed0.json"]


def test_named_profiles_are_valid():
    assert set(profiles.PROFILES) >= {"ci", "cpu", "full"}
    assert profiles.PROFILES["ci"].num_layers == 2 and profiles.PROFILES["cpu"].num_layers is None
    assert len(profiles.PROFILES["full"].seeds) >= 3
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.get_profile("gpu")
    with pytest.raises(ValueError, match="pooling must be 'cls' or 'mean', got 'max'"):
        profiles.get_profile("ci", pooling="max")


def test_mean_pooled_teacher_is_a_different_teacher(tmp_path):
    cpu = profiles.get_profile("cpu")
    cls_dir = teacher_dir(tmp_path, "rt", cpu, 0)
    mean_dir = teacher_dir(tmp_path, "rt", cpu.with_overrides(pooling="mean"), 0)
    assert cls_dir != mean_dir
    assert cls_dir == teacher_dir(tmp_path, "rt", cpu.with_overrides(threads=1), 0)


def test_a_killed_cli_run_resumes_to_the_same_result(tiny, tmp_path):
    """SIGKILL a real ``python -m mplib run`` after a checkpoint, rerun it, compare."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["--method", "movement", "--keep-ratio", "0.25", "--set", "epochs=12",
            "--set", "checkpoint_every=5"]
    ref = dict(tiny, out=tmp_path / "ref-out", cache=tmp_path / "ref-cache")
    assert _cli(ref, *args) == 0
    name = "tiny-toy-movement-keep0.25-seed0+epochs12.json"
    want = json.loads((ref["out"] / name).read_text())

    script = tmp_path / "run_tiny.py"  # the CLI, with the test's `tiny` profile registered
    script.write_text(
        "import json, sys\n"
        "from mplib.lab import profiles\n"
        "from mplib.__main__ import main\n"
        f"fields = json.loads({json.dumps(json.dumps(profiles.PROFILES['tiny'].to_dict()))})\n"
        "profiles.PROFILES['tiny'] = profiles.Profile(**fields)\n"
        "sys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(script), "run", "--task", tiny["task"], "--profile", "tiny",
           "--output", str(tiny["out"]), "--cache-dir", str(tiny["cache"]), "--no-progress",
           *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tiny["cache"] / "runs" / want["run_id"] / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not ckpt.exists():  # pragma: no cover - the run finished before it could be killed
        pytest.skip(f"no checkpoint appeared before exit: {proc.stderr.read()[-500:]!r}")
    assert not (tiny["out"] / name).exists()

    assert _cli(tiny, *args) == 0  # the same command again
    got = json.loads((tiny["out"] / name).read_text())
    assert got["resumed_from"] and got["resumed_from"] % 5 == 0
    assert got["metrics"] == want["metrics"] and got["remaining"] == want["remaining"]
    assert got["history"] == want["history"]


def test_evaluating_during_training_does_not_change_the_run(tiny, tmp_path):
    """eval_every is not part of a run id, so it must not change what the run computes: the
    evaluation loaders draw their worker seed from their own generator, not torch's global one
    (which also drives dropout)."""
    results = []
    for i, extra in enumerate(([], ["--set", "eval_every=2"])):
        out = tmp_path / f"out{i}"
        assert main(["run", "--task", tiny["task"], "--profile", "tiny", "--output", str(out),
                     "--cache-dir", str(tiny["cache"]), "--no-progress", "--method", "movement",
                     "--keep-ratio", "0.25", *extra]) == 0
        (path,) = out.glob("*.json")
        results.append(json.loads(path.read_text()))
    plain, evaluated = results
    assert evaluated["eval_history"] and not plain["eval_history"]
    assert [h["loss"] for h in plain["history"]] == [h["loss"] for h in evaluated["history"]]
    assert plain["metrics"] == evaluated["metrics"]


def test_set_reads_lowercase_booleans_like_python_literals():
    from mplib.__main__ import _parse_set

    assert _parse_set(["freeze_embeddings=true", "a=False", "b=none", "pooling=mean", "lr=3e-4"]) \
        == {"freeze_embeddings": True, "a": False, "b": None, "pooling": "mean", "lr": 3e-4}
