"""Smoke tests of the benchmarks in bench/: each runs on a one-layer model for a step or two and
produces the JSON structure its result file has. No timing is asserted: speed is what the
benchmarks measure (results/bench/), not what timed tests would check.

The scripts import their shared helpers as ``import _common`` (their own folder is on
``sys.path`` when they are run as scripts); here each helper is loaded from its file under that
name first, so no path needs changing.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[1] / "bench"
HELPERS = ("_common", "_variants")


def _load(name: str):
    if name in sys.modules and Path(sys.modules[name].__file__) == BENCH / f"{name}.py":
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up; scripts import the helpers
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _bench(name: str):
    for helper in HELPERS:
        _load(helper)
    return _load(name)


def _roundtrip(result: dict, tmp_path) -> dict:
    """The result as it reads back from its file, with the facts every result carries."""
    path = _load("_common").write_json(tmp_path / "result.json", result)
    data = json.loads(path.read_text())
    for key in ("benchmark", "versions", "hardware", "loadavg_start", "loadavg_end",
                "wall_time_s"):
        assert key in data
    for key in ("platform", "cpu", "cpu_count", "torch_threads"):
        assert key in data["hardware"]
    assert data["hardware"]["torch_threads"] == 1
    assert {"torch", "mplib"} <= set(data["versions"])
    return data


def test_train_step_smoke(tmp_path):
    bench = _bench("bench_train_step")
    result = bench.run(quick=True, model_cfg=bench._common.TINY, rounds=2, warmup=0, threads=1,
                       batch_size=2, seq_len=8, log=lambda *a: None)
    data = _roundtrip(result, tmp_path)
    assert data["benchmark"] == "bench/bench_train_step.py"
    variants = data["training_step"]["variants"]
    assert set(variants) == set(bench.VARIANTS)
    for name, entry in variants.items():
        for key in ("median_ms", "iqr_ms", "ratio_to_dense", "cpu", "step_ms"):
            assert key in entry, (name, key)
        assert entry["n"] == 2
    assert "ratio_to_emmental" in variants["movement"]
    # Top_v variants run inside the pruning phase: the kept ratio moves at every step
    for name in ("movement", "magnitude", "movement_global", "movement_before", "emmental"):
        assert variants[name]["keep_ratio_changes_every_step"], name
    assert "movement / emmental" in bench.table(data)


def test_previous_topk_swaps_and_restores():
    import mplib

    variants = _bench("_variants")
    current = mplib.topk_mask
    with variants.previous_topk():
        assert mplib.topk.topk_mask is variants.topk_mask_before
    assert mplib.topk.topk_mask is current


def test_mask_cost_smoke(tmp_path):
    bench = _bench("bench_mask_cost")
    result = bench.run(quick=True, model_cfg=bench._common.TINY, reps=1, threads=1,
                       log=lambda *a: None)
    data = _roundtrip(result, tmp_path)
    masks = data["masks_alone"]
    assert masks["threads"] == 1
    for name in (*bench.MASK_METHODS, "emmental"):
        assert {"median_ms", "min_ms"} <= set(masks[name]["all_masks"]), name
    assert "global_budgets" in masks["movement_global"]
    nan_check = masks["nan_check"]
    for name in ("isnan_any", "topk_mask", "topk_mask_before", "numpy_partition",
                 "torch_kthvalue"):
        assert f"{name}_all_matrices" in nan_check
    assert nan_check["matrices"] == 6
    assert "isnan().any()" in bench.table(data)


def test_global_memory_smoke(tmp_path):
    bench = _bench("bench_global_memory")
    result = bench.run(quick=True, sets=("tiny",), rss=False, time_reps=1, threads=1,
                       log=lambda *a: None)
    data = _roundtrip(result, tmp_path)
    memory = data["global_memory"]
    assert memory["tiny"]["budgets_identical"]
    for label in ("mplib", "naive_cat_kthvalue"):
        for key in ("profiler_peak_bytes", "profiler_peak_fraction", "time"):
            assert key in memory["tiny"][label]
    # the memory-measurement method sees a known 100 MiB allocation
    assert memory["validation"]["profiler_peak_bytes"] == 100 * 1024 * 1024
    assert "budgets identical: True" in bench.table(data)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_global_memory_rss_child():
    """The RSS check runs the script itself in a fresh process (no path set up for it)."""
    bench = _bench("bench_global_memory")
    detail = bench.rss_peak_bytes("validate", "tiny", threads=1)
    assert "error" not in detail, detail
    assert detail["peak_extra_bytes"] > 50 * 1024 * 1024


def test_sparse_speed_smoke(tmp_path):
    bench = _bench("bench_sparse_speed")
    result = bench.run(quick=True, model_cfg=bench._common.TINY, rounds=2, threads=1,
                       log=lambda *a: None)
    data = _roundtrip(result, tmp_path)
    for key, entry in data["matrix"].items():
        assert set(entry["variants"]) == set(bench.FORMATS), key
        for name, v in entry["variants"].items():
            assert v["max_abs_err"] < 1e-5, (key, name)  # every format computes the same product
        if entry["keep"] < 1:
            assert entry["nnz"] == round(entry["keep"] * entry["shape"][0] * entry["shape"][1])
    (enc,) = data["encoder"].values()
    assert enc["variants"]["csr"]["max_abs_err"] < 1e-4
    assert "csr x" in bench.table(data)
