"""Importing mplib has no side effects (STYLE rule 2): no seeding, no warning filters, no
environment, thread, dtype, logging or plot changes. Checked in a fresh interpreter, for every
module of the package (found by walking it, so a new module is covered without editing this)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import mplib

SCRIPT = textwrap.dedent(
    """
    import logging, os, pkgutil, random, sys, warnings
    import numpy as np
    import matplotlib
    import torch
    # third-party packages the experiment modules import: their own import-time behaviour is
    # not mplib's, so they are imported before the snapshot
    import datasets, transformers, tqdm.auto, torch.distributed

    seed = torch.initial_seed()
    fresh_torch = torch.Generator().manual_seed(seed).get_state()  # untouched default generator
    before = dict(
        torch_rng=torch.get_rng_state(),
        py_rng=random.getstate(),
        np_rng=np.random.get_state()[1].tolist(),
        filters=list(warnings.filters),
        env=dict(os.environ),
        threads=torch.get_num_threads(),
        dtype=torch.get_default_dtype(),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        log_level=logging.getLogger().level,
        handlers=list(logging.getLogger().handlers),
        rc=dict(dict.items(matplotlib.rcParams)),  # raw: reading "backend" imports pyplot
    )
    assert torch.equal(before["torch_rng"], fresh_torch)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import importlib
        import mplib
        names = [m.name for m in pkgutil.walk_packages(mplib.__path__, "mplib.")]
        for name in names:
            importlib.import_module(name)
    assert not caught, [str(w.message) for w in caught]
    print(len(names))

    assert torch.initial_seed() == seed, "torch was seeded"
    assert torch.equal(torch.get_rng_state(), fresh_torch), "torch RNG state changed"
    assert random.getstate() == before["py_rng"], "random state changed"
    assert np.random.get_state()[1].tolist() == before["np_rng"], "numpy RNG changed"
    assert list(warnings.filters) == before["filters"], "warnings.filters changed"
    assert dict(os.environ) == before["env"], "environment changed"
    assert torch.get_num_threads() == before["threads"]
    assert torch.get_default_dtype() == before["dtype"]
    assert torch.are_deterministic_algorithms_enabled() == before["deterministic"]
    assert logging.getLogger().level == before["log_level"]
    assert list(logging.getLogger().handlers) == before["handlers"]
    assert dict(dict.items(matplotlib.rcParams)) == before["rc"], "plot state changed"
    assert "matplotlib.pyplot" not in sys.modules
    print("OK")
    """
)


def test_import_has_no_side_effects():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    count, ok = result.stdout.split()
    assert ok == "OK"
    package = Path(mplib.__file__).parent
    modules = [p for p in package.rglob("*.py") if p.name != "__init__.py"]
    packages = [p for p in package.rglob("__init__.py") if p.parent != package]
    assert int(count) == len(modules) + len(packages), "a module was not imported"


PUBLIC_API = {
    # the paper: masks, scores, schedule, penalties, distillation
    "METHODS", "PruningMethod", "get_method", "PruningConfig", "MaskedLinear", "Pruner",
    "keep_count", "topk_mask", "kth_largest", "global_budgets", "cubic_schedule",
    "l1_sigmoid", "expected_l0", "distillation_loss", "Distillation", "training_loss",
    # surgery, reports, optimizer
    "wrap", "bake", "unwrap", "masked_layers", "sparsity_report", "remaining_fraction",
    "param_groups", "make_optimizer",
    # deployment: compact storage of a pruned model; structured models shrunk to dense
    "save_compact", "load_compact", "size_report", "shrink_model", "save_shrunk", "load_shrunk",
}


def test_public_api_is_exactly_the_listed_names():
    # a name added to or dropped from the public API must be a decision made here too
    assert set(mplib.__all__) == PUBLIC_API
    assert len(mplib.__all__) == len(set(mplib.__all__)), "a name is listed twice"
    for name in mplib.__all__:
        obj = getattr(mplib, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"mplib.{name} has no docstring"
    # nothing public leaks in besides __all__ and the subpackages/modules
    leaked = {n for n in dir(mplib) if not n.startswith("_")} - set(mplib.__all__)
    assert all(isinstance(getattr(mplib, n), types.ModuleType) for n in leaked), leaked
