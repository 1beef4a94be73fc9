"""Tests for mplib.probes (the first-cut probe) on a tiny BERT and a toy task written locally."""

from __future__ import annotations

import json

import pytest
import torch
from _train_helpers import tiny_model

import mplib
from mplib.__main__ import main
from mplib.lab import probes


def _loader(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 12, (n, 6), generator=g)
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                 labels=torch.randint(0, 2, (n,), generator=g))
    return [{k: v[i:i + 8] for k, v in batch.items()} for i in range(0, n, 8)]


def _oracle(model, layers, loader, mask_of):
    """Slow reference: a deep copy with W * M written in, evaluated by plain code."""
    import copy

    ref = copy.deepcopy(model).eval()
    names = {id(layer): name for name, layer in mplib.masked_layers(model).items()}
    ref_layers = mplib.masked_layers(ref)
    with torch.no_grad():
        for layer in layers:
            ref_layers[names[id(layer)]].weight.mul_(mask_of(layer))
        correct = sum(int((ref(**{k: v for k, v in b.items() if k != "labels"}).logits
                           .argmax(-1) == b["labels"]).sum()) for b in loader)
    return correct / sum(len(b["labels"]) for b in loader)


@pytest.mark.parametrize("rule", probes.RULES)
def test_one_shot_cut_matches_oracle_and_restores_weights(rule):
    model = tiny_model(seed=0)
    pruner = mplib.Pruner(model, mplib.PruningConfig(method="movement", keep_ratio=1.0),
                          total_steps=10)
    with torch.no_grad():
        for layer in pruner.layers:
            layer.scores.copy_(torch.randn(layer.scores.shape))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loader = _loader()
    got = probes.one_shot_cut(model, pruner.layers, loader, 0.3, rule, seed=5)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n  # restored bit for bit

    gen = torch.Generator().manual_seed(5)  # the same draws, in the same layer order
    draws = {id(layer): torch.rand(layer.weight.shape, generator=gen) for layer in pruner.layers}

    def mask_of(layer):
        k = mplib.keep_count(layer.weight.numel(), 0.3)
        ranking = {"movement": layer.scores, "magnitude": layer.weight.abs(),
                   "random": draws[id(layer)]}[rule].detach().flatten()
        keep = torch.argsort(ranking, descending=True, stable=True)[:k]
        m = torch.zeros(ranking.numel())
        m[keep] = 1
        return m.view_as(layer.weight)

    assert got["accuracy"] == _oracle(model, pruner.layers, loader, mask_of)
    assert got["examples"] == 24


def test_one_shot_cut_rejects_unknown_rule():
    model = tiny_model()
    pruner = mplib.Pruner(model, mplib.PruningConfig(method="movement", keep_ratio=1.0),
                          total_steps=4)
    with pytest.raises(ValueError, match=r"rule must be one of \('movement', 'magnitude'"):
        probes.one_shot_cut(model, pruner.layers, _loader(), 0.5, "largest", seed=0)


@pytest.fixture
def tiny(tmp_path, tiny_profile):
    task = tiny_profile(32, lr=1e-2, log_every=2)
    return dict(task=str(task), out=tmp_path / "out")


def test_cli_probe_writes_rows_at_the_requested_steps(tiny, capsys):
    args = ["probe", "--task", tiny["task"], "--profile", "tiny", "--steps", "6", "--warmup", "1",
            "--at", "2,6", "--keeps", "0.5", "--output", str(tiny["out"]), "--set", "lr=0.02"]
    assert main(args) == 0
    path = tiny["out"] / "first_cut-toy-tiny-seed0+lr0.02.json"
    assert str(path) in capsys.readouterr().out
    res = json.loads(path.read_text())
    assert [r["step"] for r in res["rows"]] == [2, 6] and res["keeps"] == [0.5]
    assert res["profile"]["lr"] == 0.02 and res["validation_examples"] == 16
    for row in res["rows"]:
        assert set(row) == {"step", "dense", "score_span", "movement@0.5", "magnitude@0.5",
                            "random@0.5"}
        assert row["score_span"] > 0  # the scores did learn while nothing was masked
        for key in ("dense", "movement@0.5", "magnitude@0.5", "random@0.5"):
            assert row[key]["examples"] == 16
    assert {"versions", "hardware", "wall_seconds"} <= set(res)


def test_cli_probe_bad_steps_name_the_range(tiny, capsys):
    with pytest.raises(SystemExit):
        main(["probe", "--task", tiny["task"], "--profile", "tiny", "--steps", "4",
              "--at", "2,9", "--output", str(tiny["out"])])
    assert "probe steps must lie in 1..4" in capsys.readouterr().err
