"""Importing mplib has no side effects (STYLE rule 2): no seeding, no warning filters, no
environment, thread, dtype, logging or plot changes. Checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import mplib

SCRIPT = textwrap.dedent(
    """
    import logging, os, random, sys, warnings
    import numpy as np
    import matplotlib
    import torch

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
        import mplib
        import mplib.config, mplib.distill, mplib.global_topk, mplib.hard_concrete
        import mplib.masked, mplib.optim, mplib.pruner, mplib.regularizers, mplib.report
        import mplib.schedule, mplib.ste, mplib.surgery, mplib.topk
    assert not caught, [str(w.message) for w in caught]

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
    assert result.stdout.strip() == "OK"


def test_public_api_is_listed():
    for name in mplib.__all__:
        assert hasattr(mplib, name), name
    assert "wrap" in mplib.__all__ and "Pruner" in mplib.__all__
