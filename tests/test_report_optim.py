"""Reporting (remaining weights, paper §5 definition) and optimizer parameter groups, against
counts made by hand."""

from __future__ import annotations

import math

import pytest
import torch
from _core_helpers import FAMILIES, MLP_TARGETS, make_model

import mplib

GROUPS = {
    "bert": {"query", "key", "value", "attention_output", "ffn_in", "ffn_out"},
    "roberta": {"query", "key", "value", "attention_output", "ffn_in", "ffn_out"},
    "distilbert": {"query", "key", "value", "attention_output", "ffn_in", "ffn_out"},
    "gpt2": {"qkv", "attention_output", "ffn_in", "ffn_out"},
}


def _wrap_soft(family, tau=0.3, seed=0):
    model = make_model(family)
    n_all = sum(p.numel() for p in model.parameters())
    kw = dict(target_modules=MLP_TARGETS) if family == "mlp" else {}
    mplib.wrap(model, mplib.PruningConfig(method="soft_movement", tau=tau, **kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lay in mplib.masked_layers(model).values():
            lay.scores.copy_(torch.randn(lay.scores.shape, generator=g) * 2)
    return model, n_all


def _hand_counts(model, tau):
    """(name, layer index, numel, kept) per matrix, kept = #{sigmoid(S) > tau} by a loop."""
    rows = []
    for name, lay in mplib.masked_layers(model).items():
        kept = sum(1 for s in lay.scores.reshape(-1).tolist() if 1 / (1 + math.exp(-s)) > tau)
        parts = name.split(".")
        layer = next((int(p) for p in parts if p.isdigit()), None)
        rows.append((name, layer, lay.weight.numel(), kept))
    return rows


@pytest.mark.parametrize("family", FAMILIES)
def test_sparsity_report_matches_hand_counts(family):
    tau = 0.3
    model, n_all = _wrap_soft(family, tau)
    rows = _hand_counts(model, tau)
    kept = sum(r[3] for r in rows)
    targeted = sum(r[2] for r in rows)
    assert 0 < kept < targeted

    assert mplib.remaining_fraction(model) == pytest.approx(kept / targeted, rel=1e-15)
    rep = mplib.sparsity_report(model)
    assert rep["global"] == pytest.approx(kept / targeted, rel=1e-15)
    assert rep["targeted_weights"] == targeted and rep["kept_weights"] == kept
    assert rep["all_parameters"] == n_all  # scores are not model parameters in this count
    assert rep["of_all_parameters"] == pytest.approx((n_all - (targeted - kept)) / n_all)
    assert rep["per_matrix"] == {name: pytest.approx(k / n) for name, _, n, k in rows}

    per_layer = {}
    for _, layer, n, k in rows:
        a, b = per_layer.get(layer, (0, 0))
        per_layer[layer] = (a + k, b + n)
    assert rep["per_layer"] == {lay: pytest.approx(k / n) for lay, (k, n) in per_layer.items()}
    if family == "mlp":
        assert set(rep["per_layer"]) == {0, 2} and set(rep["per_group"]) == {"0", "2"}
    else:
        assert set(rep["per_layer"]) == {0, 1}
        assert set(rep["per_group"]) == GROUPS[family]


def test_report_groups_by_role():
    from mplib.report import group_of, layer_of

    assert group_of("bert.encoder.layer.3.attention.output.dense") == "attention_output"
    assert group_of("bert.encoder.layer.3.output.dense") == "ffn_out"
    assert group_of("bert.encoder.layer.3.intermediate.dense") == "ffn_in"
    assert group_of("transformer.h.0.attn.c_proj") == "attention_output"
    assert group_of("transformer.h.0.mlp.c_proj") == "ffn_out"
    assert group_of("distilbert.transformer.layer.1.attention.v_lin") == "value"
    assert group_of("distilbert.transformer.layer.1.ffn.lin1") == "ffn_in"
    assert layer_of("bert.encoder.layer.11.output.dense") == 11
    assert layer_of("classifier") is None


def test_report_for_topv_counts_are_exact_keep_counts():
    model = make_model("bert")
    mplib.wrap(model, mplib.PruningConfig(method="magnitude", keep_ratio=0.1))
    rows = mplib.report.matrix_report(model)
    for r in rows:
        assert r["kept"] == math.ceil(r["numel"] / 10)  # numel is 256 or 512 here
    assert mplib.remaining_fraction(model) == sum(r["kept"] for r in rows) / sum(
        r["numel"] for r in rows
    )


def test_pruner_report_carries_the_schedule():
    model = make_model("mlp")
    cfg = mplib.PruningConfig(method="movement", keep_ratio=0.2, target_modules=MLP_TARGETS)
    pruner = mplib.Pruner(model, cfg, total_steps=10, warmup_steps=2, cooldown_steps=2)
    pruner.step(10)
    rep = pruner.report()
    assert rep["schedule"]["keep_ratio"] == 0.2 and rep["schedule"]["step"] == 10
    assert rep["global"] == pytest.approx((math.ceil(0.2 * 128) + math.ceil(0.2 * 192)) / 320)


# -- param_groups -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["movement", "l0", "magnitude", "random", "snip"])
@pytest.mark.parametrize("family", FAMILIES)
def test_param_groups_cover_every_trainable_parameter_once(family, method):
    model = make_model(family)
    kw = dict(target_modules=MLP_TARGETS) if family == "mlp" else {}
    if method != "l0":
        kw["keep_ratio"] = 0.5
    mplib.wrap(model, mplib.PruningConfig(method=method, **kw))
    groups = mplib.param_groups(model, lr=3e-5, score_lr=1e-2, weight_decay=0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # no parameter twice
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable
    by_name = {g["name"]: g for g in groups}
    score_ids = {id(lay.scores) for lay in mplib.masked_layers(model).values()}
    if method in ("movement", "l0"):
        scores = by_name["scores"]
        assert scores["lr"] == 1e-2 and scores["weight_decay"] == 0.0
        assert {id(p) for p in scores["params"]} == score_ids
    else:
        assert "scores" not in by_name  # magnitude: none; random/snip: buffers, not trained
    assert by_name["weights"]["weight_decay"] == 0.01 and by_name["weights"]["lr"] == 3e-5
    assert by_name["no_decay"]["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    for p in by_name["no_decay"]["params"]:
        assert p.ndim == 1, names[id(p)]  # biases and LayerNorm
    for p in by_name["weights"]["params"]:
        assert p.ndim == 2 and not names[id(p)].endswith("scores")


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "gpt2"])
def test_freeze_embeddings(family):
    model = make_model(family)
    mplib.wrap(model, mplib.PruningConfig(method="movement", keep_ratio=0.5))
    groups = mplib.param_groups(model, lr=1e-3, freeze_embeddings=True)
    in_groups = {id(p) for g in groups for p in g["params"]}
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen
    for name, p in model.named_parameters():
        is_embedding = "embeddings" in name.split(".") or name.split(".")[-2] in ("wte", "wpe")
        assert p.requires_grad != is_embedding, name
        assert (id(p) in in_groups) == p.requires_grad
    if family == "gpt2":
        assert set(frozen) == {"transformer.wte.weight", "transformer.wpe.weight"}
        assert model.lm_head.weight.requires_grad is False  # tied to wte
