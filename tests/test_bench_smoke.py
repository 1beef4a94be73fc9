"""Smoke test of bench/bench_masking.py: the benchmark functions run on a 1-layer model for two
steps and produce the JSON structure the results file has. No timing is asserted here: speed
targets are measured by the benchmark itself (results/bench/masking.json), not by timed tests.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_masking", ROOT / "bench" / "bench_masking.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_masking", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_bench_masking_smoke(tmp_path):
    bench = _bench()
    result = bench.run(quick=True, model_cfg=bench.TINY, rounds=2, warmup=0, threads=1,
                       memory_sets=("tiny",), rss=False, mask_reps=1, batch_size=2, seq_len=8,
                       log=lambda *a: None)
    out = tmp_path / "masking.json"
    out.write_text(json.dumps(result))
    data = json.loads(out.read_text())

    for key in ("hardware", "loadavg_start", "loadavg_end", "training_step", "masks_alone",
                "global_memory", "wall_time_s"):
        assert key in data
    for key in ("platform", "processor", "cpu_count", "torch", "torch_num_threads"):
        assert key in data["hardware"]
    variants = data["training_step"]["variants"]
    assert set(variants) == set(bench.VARIANTS)
    for name, entry in variants.items():
        for key in ("median_ms", "iqr_ms", "ratio_to_dense", "cpu"):
            assert key in entry, (name, key)
        assert entry["n"] == 2
    assert "ratio_to_emmental" in variants["movement"]
    # Top_v variants run inside the pruning phase: the kept ratio moves at every step
    for name in ("movement", "magnitude", "movement_global"):
        assert variants[name]["keep_ratio_changes_every_step"]
    assert "nan_check" in data["masks_alone"]
    memory = data["global_memory"]
    assert memory["tiny"]["budgets_identical"]
    for label in ("mplib", "naive_cat_kthvalue"):
        for key in ("profiler_peak_bytes", "profiler_peak_fraction", "time"):
            assert key in memory["tiny"][label]
    # the memory-measurement method sees a known 100 MiB allocation
    assert memory["validation"]["profiler_peak_bytes"] == 100 * 1024 * 1024
    assert "movement / emmental" in bench.table(data)  # the table renders
