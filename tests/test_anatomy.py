"""mplib.lab.anatomy against slow oracles: Python sets for the overlap, loops for the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _core_helpers import make_model, oracle_topk_indices

import mplib
from mplib.lab.anatomy import EDGES, SAMPLE, mask_anatomy, snapshot
from mplib.report import group_of


def wrapped(method="magnitude", keep=0.3, seed=0):
    model = make_model("bert", seed=seed)
    cfg = mplib.PruningConfig(method=method, keep_ratio=keep)
    mplib.wrap(model, cfg)
    return model


def oracle_rows(model, pre):
    rows = []
    for name, layer in mplib.masked_layers(model).items():
        w = layer.weight.detach().flatten().tolist()
        w0 = pre[name].flatten().tolist()
        kept = {i for i, v in enumerate(layer.mask().flatten().tolist()) if v}
        top = oracle_topk_indices([abs(v) for v in w0], len(kept))
        top_final = oracle_topk_indices([abs(v) for v in w], len(kept))
        grew = {i for i in range(len(w)) if abs(w[i]) > abs(w0[i])}
        pruned = set(range(len(w))) - kept
        rows.append(dict(group=group_of(name), kept=len(kept),
                         overlap=len(kept & top) / len(kept), chance=len(kept) / len(w),
                         overlap_final=len(kept & top_final) / len(kept),
                         moved_away_kept=len(kept & grew) / len(kept),
                         moved_away_pruned=len(pruned & grew) / len(pruned)))
    return rows


def test_matches_the_oracle_after_the_weights_move():
    torch.manual_seed(0)
    model = wrapped("movement", keep=0.3)
    pre = snapshot(model)
    with torch.no_grad():
        for layer in mplib.masked_layers(model).values():
            layer.weight.add_(0.05 * torch.randn_like(layer.weight))
            layer.scores.copy_(torch.randn_like(layer.scores))
    got = mask_anatomy(model, pre)
    rows = oracle_rows(model, pre)
    total = sum(r["kept"] for r in rows)
    for key in ("overlap", "overlap_final", "chance", "moved_away_kept", "moved_away_pruned"):
        want = sum(r[key] * r["kept"] for r in rows) / total
        assert got["global"][key] == pytest.approx(want, rel=1e-9), key
        q = [r for r in rows if r["group"] == "query"]
        want_q = sum(r[key] * r["kept"] for r in q) / sum(r["kept"] for r in q)
        assert got["per_group"]["query"][key] == pytest.approx(want_q, rel=1e-9), key


def test_magnitude_before_training_is_the_pretrained_mask_and_random_is_chance():
    model = wrapped("magnitude", keep=0.2)
    got = mask_anatomy(model, snapshot(model))
    assert got["global"]["overlap"] == pytest.approx(1.0)
    assert got["global"]["overlap_final"] == pytest.approx(1.0)
    assert got["global"]["moved_away_kept"] == 0.0
    rand = wrapped("random", keep=0.2)
    g = mask_anatomy(rand, snapshot(rand))["global"]
    assert abs(g["overlap"] - g["chance"]) < 0.1  # a random mask overlaps by chance only


def test_histograms_and_scatter():
    model = wrapped("magnitude", keep=0.25)
    pre = snapshot(model)
    with torch.no_grad():
        for layer in mplib.masked_layers(model).values():
            layer.weight.mul_(3.0)  # push some entries past the edges
    got = mask_anatomy(model, pre)
    kept = torch.cat([layer.weight.detach().flatten()[layer.mask().flatten().bool()]
                      for layer in mplib.masked_layers(model).values()]).numpy()
    want, _ = np.histogram(np.clip(kept, EDGES[0], EDGES[-1]), bins=np.array(EDGES))
    assert got["histogram"]["kept_final"] == want.tolist()
    assert sum(got["histogram"]["pretrained"]) == sum(t.numel() for t in pre.values())
    sc = got["scatter"]
    name, last = list(mplib.masked_layers(model).items())[-1]
    assert sc["matrix"] == name
    assert len(sc["weight"]) == min(SAMPLE, last.weight.numel()) == len(sc["kept"])
    flat = last.weight.detach().flatten().tolist()
    assert all(any(abs(w - v) < 1e-6 for v in flat) for w in sc["weight"][:20])
    assert sc["score"] == [pytest.approx(abs(w), abs=1e-6) for w in sc["weight"]]  # magnitude


def test_clear_errors():
    with pytest.raises(ValueError, match="mplib.wrap"):
        snapshot(torch.nn.Linear(3, 3))
    model = wrapped()
    with pytest.raises(ValueError, match="snapshot"):
        mask_anatomy(model, {})
