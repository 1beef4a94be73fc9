"""Bad input fails early with a message that names the fix."""

from __future__ import annotations

import math

import pytest
import torch
from _core_helpers import make_model
from torch import nn

import mplib
from mplib import PruningConfig


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), float("inf"), "0.1"])
def test_keep_ratio_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"keep_ratio .* must be in \(0, 1\].*keep_ratio=0\.1"):
        PruningConfig(method="movement", keep_ratio=bad)


@pytest.mark.parametrize("bad", [0.0, 1.2, float("nan")])
def test_initial_keep_ratio_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"initial_keep_ratio .* must be in \(0, 1\]"):
        PruningConfig(method="magnitude", keep_ratio=0.1, initial_keep_ratio=bad)


def test_keep_ratio_larger_than_initial():
    with pytest.raises(ValueError, match="larger than initial_keep_ratio.*only removes"):
        PruningConfig(method="magnitude", keep_ratio=0.5, initial_keep_ratio=0.3)


@pytest.mark.parametrize(
    "method", ["magnitude", "movement", "random", "accumulated_movement", "snip"]
)
def test_topv_methods_need_keep_ratio(method):
    with pytest.raises(ValueError, match=r"needs keep_ratio.*keep_ratio=0\.1"):
        PruningConfig(method=method)


@pytest.mark.parametrize("method", ["soft_movement", "l0", "threshold"])
def test_keep_ratio_refused_where_sparsity_comes_from_tau_or_lam(method):
    with pytest.raises(ValueError, match="does not take keep_ratio.*Drop keep_ratio"):
        PruningConfig(method=method, keep_ratio=0.1)


def test_unknown_method_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown pruning method 'topk'.*'movement'"):
        PruningConfig(method="topk", keep_ratio=0.1)


@pytest.mark.parametrize(
    "method,kw",
    [("movement", dict(keep_ratio=0.1)), ("magnitude", dict(keep_ratio=0.1)), ("l0", {})],
)
def test_tau_refused_where_nothing_is_thresholded(method, kw):
    with pytest.raises(ValueError, match="does not use tau.*soft_movement.*threshold.*Drop tau"):
        PruningConfig(method=method, tau=0.1, **kw)


@pytest.mark.parametrize(
    "method,kw",
    [("movement", dict(keep_ratio=0.1)), ("magnitude", dict(keep_ratio=0.1)), ("threshold", {})],
)
def test_lam_refused_without_penalty(method, kw):
    with pytest.raises(ValueError, match="lam does not apply.*soft_movement and l0.*Drop lam"):
        PruningConfig(method=method, lam=1.0, **kw)


@pytest.mark.parametrize("tau", [0.0, 1.0, -0.5, 2.0])
def test_soft_movement_tau_is_on_sigmoid(tau):
    with pytest.raises(ValueError, match=r"tau must be in \(0, 1\).*S > -2\.197"):
        PruningConfig(method="soft_movement", tau=tau)


def test_other_config_errors():
    with pytest.raises(ValueError, match="tau must be a finite number"):
        PruningConfig(method="threshold", tau=float("nan"))
    with pytest.raises(ValueError, match="initial_tau must be in \\[0, tau\\]"):
        PruningConfig(method="soft_movement", tau=0.1, initial_tau=0.2)
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        PruningConfig(method="l0", lam=-1.0)
    with pytest.raises(ValueError, match="lam_schedule must be 'cubic' or 'constant'"):
        PruningConfig(method="l0", lam_schedule="linear")
    with pytest.raises(ValueError, match="scope must be 'local' or 'global'"):
        PruningConfig(method="movement", keep_ratio=0.1, scope="layer")
    with pytest.raises(ValueError, match="scope='global'.*needs a keep_ratio method"):
        PruningConfig(method="soft_movement", scope="global")
    with pytest.raises(ValueError, match="score_init must be one of"):
        PruningConfig(method="movement", keep_ratio=0.1, score_init="zeros")
    with pytest.raises(ValueError, match="l0_left < 0, l0_right > 1 and l0_beta > 0"):
        PruningConfig(method="l0", l0_right=0.9)
    with pytest.raises(ValueError, match="global_every must be a positive integer"):
        PruningConfig(method="movement", keep_ratio=0.1, scope="global", global_every=0)


def test_valid_config_defaults_and_to_dict():
    cfg = PruningConfig(method="soft_movement", target_modules="query")
    assert cfg.tau == 0.1 and cfg.lam == 0.0 and cfg.lam_schedule == "cubic"
    assert cfg.target_modules == ("query",)  # one string is one pattern, not its characters
    assert PruningConfig(method="threshold").tau == 0.0
    d = PruningConfig(method="movement", keep_ratio=0.1, target_modules=["a", "b"]).to_dict()
    assert d["target_modules"] == ["a", "b"] and d["keep_ratio"] == 0.1
    assert set(mplib.METHODS) == {
        "magnitude",
        "movement",
        "soft_movement",
        "l0",
        "threshold",
        "random",
        "accumulated_movement",
        "snip",
        "block_movement",
        "neuron_movement",
        "head_movement",
    }


# -- NaN scores ---------------------------------------------------------------------------------


def test_nan_scores_in_a_movement_forward():
    layer = mplib.MaskedLinear(nn.Linear(3, 2), PruningConfig(method="movement", keep_ratio=0.5))
    with torch.no_grad():
        layer.scores[0, 1] = math.nan
    with pytest.raises(ValueError, match="NaN.*score learning rate"):
        layer(torch.randn(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        layer.mask()


def test_nan_scores_in_global_budgets():
    with pytest.raises(ValueError, match="NaN.*global Top_v.*learning rates"):
        mplib.global_budgets([torch.ones(3), torch.tensor([0.0, math.nan])], 0.5)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    cfg = PruningConfig(
        method="movement",
        keep_ratio=0.5,
        scope="global",
        target_modules=["0", "1"],
        initial_keep_ratio=0.5,
    )
    pruner = mplib.Pruner(model, cfg, total_steps=4)
    with torch.no_grad():
        mplib.masked_layers(model)["1"].scores[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        pruner.step(1)


# -- surgery ------------------------------------------------------------------------------------


def test_nothing_matched_lists_candidates():
    model = make_model("bert")
    cfg = PruningConfig(method="magnitude", keep_ratio=0.5, target_modules=["attention.q_lin"])
    with pytest.raises(
        ValueError,
        match=r"matched no Linear/Conv1D.*Candidates: .*"
        r"bert\.encoder\.layer\.0\.attention\.self\.query",
    ):
        mplib.wrap(model, cfg)
    cfg = PruningConfig(method="magnitude", keep_ratio=0.5, exclude_modules=[r".*"])
    with pytest.raises(ValueError, match=r"minus exclude_modules=\['\.\*'\].*Candidates"):
        mplib.wrap(model, cfg)
    assert not mplib.masked_layers(model)


def test_no_default_targets_for_unknown_families():
    model = make_model("mlp")
    with pytest.raises(
        ValueError,
        match=r"no default target_modules.*pass target_modules=.*"
        r"Linear/Conv1D modules in this model: 0, 2, 4",
    ):
        mplib.wrap(model, PruningConfig(method="magnitude", keep_ratio=0.5))


@pytest.mark.parametrize(
    "target,kind",
    [
        ("bert.embeddings.word_embeddings", "Embedding"),
        ("embeddings.LayerNorm", "LayerNorm"),
        ("attention.output.LayerNorm", "LayerNorm"),
    ],
)
def test_unsupported_layer_type_by_name(target, kind):
    model = make_model("bert")
    cfg = PruningConfig(method="magnitude", keep_ratio=0.5, target_modules=[target])
    with pytest.raises(TypeError, match=f"type {kind}, which mplib cannot mask.*nn.Linear"):
        mplib.wrap(model, cfg)
    assert not mplib.masked_layers(model)


def test_masked_linear_refuses_other_layers():
    with pytest.raises(TypeError, match="cannot wrap emb of type Embedding.*exclude_modules"):
        mplib.MaskedLinear(
            nn.Embedding(4, 3), PruningConfig(method="magnitude", keep_ratio=0.5), name="emb"
        )


def test_already_wrapped():
    model = make_model("distilbert")
    cfg = PruningConfig(method="magnitude", keep_ratio=0.5)
    mplib.wrap(model, cfg)
    with pytest.raises(ValueError, match="already wrapped.*mplib.unwrap or mplib.bake"):
        mplib.wrap(model, cfg)
    mplib.bake(model)
    mplib.wrap(model, cfg)  # fine again after bake


def test_pruner_method_mismatch_and_report_without_masks():
    model = nn.Sequential(nn.Linear(3, 3))
    mplib.wrap(model, PruningConfig(method="magnitude", keep_ratio=0.5, target_modules=["0"]))
    with pytest.raises(ValueError, match="wrapped with another method"):
        mplib.Pruner(
            model,
            PruningConfig(method="movement", keep_ratio=0.5, target_modules=["0"]),
            total_steps=5,
        )
    plain = nn.Sequential(nn.Linear(3, 3))
    for fn in (mplib.remaining_fraction, mplib.sparsity_report):
        with pytest.raises(ValueError, match=r"no mplib masked layers.*mplib\.wrap"):
            fn(plain)


def test_schedule_guard_through_the_pruner():
    model = nn.Sequential(nn.Linear(3, 3))
    cfg = PruningConfig(method="movement", keep_ratio=0.5, target_modules=["0"])
    with pytest.raises(
        ValueError,
        match=r"warmup_steps \+ cooldown_steps = 3 \+ 2 must be smaller"
        r" than total_steps = 5",
    ):
        mplib.Pruner(model, cfg, total_steps=5, warmup_steps=3, cooldown_steps=2)
