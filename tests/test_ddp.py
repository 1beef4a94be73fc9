"""Two CPU processes (gloo) train the same tiny BERT data-parallel: masks, scores, global
budgets and weights must be identical on both ranks after training, for every method mplib
supports under DDP (and accumulated_movement only thanks to mplib's score-buffer sync)."""

from __future__ import annotations

import json

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from _ddp_worker import CASES, worker
from _train_helpers import save_tiny_encoder, write_tiny_task

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    save_tiny_encoder(tmp / "enc")
    write_tiny_task(tmp / "toy", n_train=64, n_eval=16)
    mp.spawn(worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    out = json.loads((tmp / "report.json").read_text())
    out["result_files"] = sorted(p.name for p in (tmp / "out").glob("*.json"))
    return out


def test_each_rank_gets_half_of_every_batch(report):
    assert report["train_batches"] == 64 // 8  # 64 examples, global batch 8, 2 ranks x 4


@pytest.mark.parametrize("method,cfg,sync", [c for c in CASES if c[2]],
                         ids=[f"{c[0]}-{c[1].get('scope', 'local')}" for c in CASES if c[2]])
def test_masks_scores_budgets_identical_on_both_ranks(report, method, cfg, sync):
    r = report[f"{method}-{cfg.get('scope', 'local')}-sync"]
    assert r["masks"] and r["scores"] and r["budgets"] and r["weights"], r
    if "keep_ratio" in cfg:
        assert r["remaining"] == pytest.approx(cfg["keep_ratio"], abs=0.01)


def test_accumulated_movement_drifts_without_the_sync(report):
    # the backward hook sees each rank's local gradient: scores differ across ranks
    assert report["accumulated_movement-local-nosync"]["scores"] is False


def test_snip_is_refused_under_ddp(report):
    assert report["snip_refused"] is True


def test_runner_under_ddp_writes_once(report):
    assert report["runner_world_size"] == 2 and report["runner_same_on_both_ranks"]
    assert report["result_files"] == ["tiny-toy-movement-keep0.25-seed0.json"]
