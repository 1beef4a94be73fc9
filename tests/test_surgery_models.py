"""Model surgery on a table of tiny offline models (STYLE rule 8): wrap -> train a few steps ->
bake gives the same outputs, plain modules and the mask's zero pattern; unwrap restores the
original model; default targets are the six encoder matrices of every block."""

from __future__ import annotations

import pytest
import torch
from _core_helpers import FAMILIES, MLP_TARGETS, loss_of, make_batch, make_model, outputs
from transformers.pytorch_utils import Conv1D

import mplib
from mplib.masked import MaskedLinear

METHOD_CONFIGS = {
    "magnitude": dict(keep_ratio=0.5),
    "movement": dict(keep_ratio=0.5),
    "soft_movement": dict(tau=0.4, lam=1.0, score_init="uniform", score_init_value=1.0),
    "l0": dict(lam=1.0, score_init="uniform", score_init_value=2.0),
    "random": dict(keep_ratio=0.5),
    "accumulated_movement": dict(keep_ratio=0.5),
    "snip": dict(keep_ratio=0.5),
    "threshold": dict(tau=0.0, score_init="uniform", score_init_value=1.0),
}
STEPS = 3


def _config(family, method, **extra):
    kw = dict(method=method, **METHOD_CONFIGS[method], **extra)
    if family == "mlp":
        kw["target_modules"] = MLP_TARGETS
    return mplib.PruningConfig(**kw)


def _fresh(family, model):
    return make_model("mlp") if family == "mlp" else type(model)(model.config)


def _classes(model):
    return {n: type(m) for n, m in model.named_modules()}


@pytest.mark.parametrize("method", sorted(METHOD_CONFIGS))
@pytest.mark.parametrize("family", FAMILIES)
def test_wrap_train_bake_same_outputs(family, method):
    model = make_model(family)
    batch = make_batch(family)
    classes = _classes(model)
    mplib.wrap(model, _config(family, method))
    layers = mplib.masked_layers(model)
    assert layers
    pruner = mplib.Pruner(model, _config(family, method), total_steps=STEPS)
    opt = torch.optim.AdamW(mplib.param_groups(model, lr=1e-3, score_lr=1e-2))
    model.train()
    for step in range(STEPS):
        pruner.step(step)
        loss = loss_of(model, batch) + pruner.penalty()
        loss.backward()
        opt.step()
        opt.zero_grad()
    pruner.step(STEPS)  # the final masks
    model.eval()

    masks = {n: lay.mask().clone() for n, lay in layers.items()}
    weights = {n: lay.weight.detach().clone() for n, lay in layers.items()}
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert 0 < kept < total, "the table should exercise real pruning"
    if method in ("accumulated_movement", "snip"):  # the hooks did accumulate something
        assert any(bool(lay.scores.abs().sum() > 0) for lay in layers.values())
    wrapped_out = outputs(model, batch)

    mplib.bake(model)
    assert not mplib.masked_layers(model)
    assert not any(isinstance(m, MaskedLinear) for m in model.modules())
    assert _classes(model) == classes  # every module is of its original class again
    assert torch.equal(outputs(model, batch), wrapped_out)  # bit for bit
    for name, mask in masks.items():
        baked = model.get_submodule(name).weight.detach()
        assert torch.equal(baked, weights[name] * mask)
        assert torch.equal((baked != 0).to(mask.dtype), mask)  # the kept-zero pattern is M
    assert not any("scores" in n for n, _ in model.named_parameters())
    assert not any("scores" in n for n, _ in model.named_buffers())

    fresh = _fresh(family, model)
    fresh.load_state_dict(model.state_dict())  # strict: the baked model is the plain class
    fresh.eval()
    assert torch.equal(outputs(fresh, batch), wrapped_out)


@pytest.mark.parametrize("family", FAMILIES)
def test_unwrap_restores_outputs_and_parameter_identity(family):
    model = make_model(family)
    batch = make_batch(family)
    before = outputs(model, batch)
    classes = _classes(model)
    cfg = (
        _config(family, "magnitude")
        if family == "mlp"
        else mplib.PruningConfig(method="magnitude", keep_ratio=0.3)
    )
    names = [n for n, m in model.named_modules() if n in mplib.surgery.select_modules(model, cfg)]
    original = {n: (model.get_submodule(n).weight, model.get_submodule(n).bias) for n in names}
    n_params = len(list(model.parameters()))

    mplib.wrap(model, cfg)
    layers = mplib.masked_layers(model)
    assert list(layers) == names
    for n, lay in layers.items():  # shared, not copied
        assert lay.weight is original[n][0] and lay.bias is original[n][1]
    assert len(list(model.parameters())) == n_params  # magnitude adds no parameter
    assert not torch.equal(outputs(model, batch), before)  # the masks act

    mplib.unwrap(model)
    assert not mplib.masked_layers(model)
    assert _classes(model) == classes
    for n in names:
        assert model.get_submodule(n).weight is original[n][0]
        assert model.get_submodule(n).bias is original[n][1]
    assert torch.equal(outputs(model, batch), before)


def test_wrap_shares_parameters_so_training_updates_the_original():
    model = make_model("bert")
    q = model.bert.encoder.layer[0].attention.self.query
    w = q.weight
    mplib.wrap(model, mplib.PruningConfig(method="movement", keep_ratio=0.5))
    opt = torch.optim.SGD(mplib.param_groups(model, lr=0.1, score_lr=0.1), lr=0.1)
    before = w.detach().clone()
    loss_of(model, make_batch("bert")).backward()
    opt.step()
    assert not torch.equal(w.detach(), before)  # the original Parameter object was trained
    mplib.unwrap(model)
    assert model.bert.encoder.layer[0].attention.self.query.weight is w


def test_conv1d_layer_is_the_exact_conv1d_computation():
    torch.manual_seed(0)
    conv = Conv1D(6, 4)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 4)
    ref = conv(x)
    layer = MaskedLinear(conv, mplib.PruningConfig(method="magnitude", keep_ratio=1.0))
    assert layer.transposed and layer.in_features == 4 and layer.out_features == 6
    assert torch.equal(layer(x), ref)
    layer.keep_ratio = 0.5
    mask = layer.mask()
    assert mask.shape == conv.weight.shape == (4, 6)
    expected = torch.addmm(conv.bias, x.reshape(-1, 4), conv.weight * mask).view(2, 3, 6)
    assert torch.equal(layer(x), expected)
    assert "Conv1D(in=4, out=6" in repr(layer)


# -- default targets and matching ---------------------------------------------------------------

EXPECTED_DEFAULTS = {
    "bert": (
        "bert.encoder.layer.{}.",
        [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ],
    ),
    "roberta": (
        "roberta.encoder.layer.{}.",
        [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ],
    ),
    "distilbert": (
        "distilbert.transformer.layer.{}.",
        [
            "attention.q_lin",
            "attention.k_lin",
            "attention.v_lin",
            "attention.out_lin",
            "ffn.lin1",
            "ffn.lin2",
        ],
    ),
    "gpt2": ("transformer.h.{}.", ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]),
}


@pytest.mark.parametrize("family", sorted(EXPECTED_DEFAULTS))
def test_default_targets_are_the_block_matrices(family):
    model = make_model(family)
    prefix, parts = EXPECTED_DEFAULTS[family]
    expected = [prefix.format(i) + p for i in range(2) for p in parts]
    mplib.wrap(model, mplib.PruningConfig(method="magnitude", keep_ratio=0.5))
    layers = mplib.masked_layers(model)
    assert sorted(layers) == sorted(expected)
    # Q, K, V, attention output, FFN in, FFN out: 4 d^2 + 2 d d_ff weights per block (d=16, 32)
    assert sum(lay.weight.numel() for lay in layers.values()) == 2 * (4 * 16 * 16 + 2 * 16 * 32)
    for name, _ in model.named_modules():  # embeddings, pooler and heads are left alone
        if any(w in name for w in ("embeddings", "pooler", "classifier", "lm_head", "wte", "wpe")):
            assert name not in layers


@pytest.mark.parametrize(
    "targets,excludes,expected",
    [
        (
            ["bert.encoder.layer.0.attention.self.query"],
            None,
            ["bert.encoder.layer.0.attention.self.query"],
        ),  # exact name
        (
            ["attention.self.query"],
            None,
            [
                "bert.encoder.layer.0.attention.self.query",
                "bert.encoder.layer.1.attention.self.query",
            ],
        ),  # dotted suffix
        (
            "key",
            None,
            ["bert.encoder.layer.0.attention.self.key", "bert.encoder.layer.1.attention.self.key"],
        ),  # one string, a suffix
        (
            [r".*layer\.1\..*dense"],
            None,
            [
                "bert.encoder.layer.1.attention.output.dense",
                "bert.encoder.layer.1.intermediate.dense",
                "bert.encoder.layer.1.output.dense",
            ],
        ),  # regex (full match)
        (
            None,
            ["intermediate.dense", r".*layer\.1\..*"],
            [
                "bert.encoder.layer.0.attention.self.query",
                "bert.encoder.layer.0.attention.self.key",
                "bert.encoder.layer.0.attention.self.value",
                "bert.encoder.layer.0.attention.output.dense",
                "bert.encoder.layer.0.output.dense",
            ],
        ),  # defaults minus a suffix and a regex
        (["pooler.dense", "classifier"], None, ["bert.pooler.dense", "classifier"]),
    ],
)
def test_target_and_exclude_by_name_suffix_regex(targets, excludes, expected):
    model = make_model("bert")
    cfg = mplib.PruningConfig(
        method="magnitude", keep_ratio=0.5, target_modules=targets, exclude_modules=excludes
    )
    assert mplib.surgery.select_modules(model, cfg) == expected
    mplib.wrap(model, cfg)
    assert list(mplib.masked_layers(model)) == expected


def test_suffix_does_not_match_inside_a_name():
    # "dense" is a suffix of "...output.dense" at a dot boundary, "ense" is not
    model = make_model("bert")
    cfg = mplib.PruningConfig(method="magnitude", keep_ratio=0.5, target_modules=["ense"])
    with pytest.raises(ValueError, match="matched no"):
        mplib.wrap(model, cfg)
    assert mplib.surgery.matches("a.output.dense", "output.dense")
    assert not mplib.surgery.matches("a.output.dense", "put.dense")
    assert not mplib.surgery.matches("a.b", "[")  # a bad regex simply does not match


def test_bake_keeps_dtype_requires_grad_and_mode():
    model = make_model("gpt2").double()
    model.transformer.h[0].mlp.c_fc.weight.requires_grad_(False)
    mplib.wrap(model, mplib.PruningConfig(method="magnitude", keep_ratio=0.5))
    model.train()
    mplib.bake(model)
    fc = model.transformer.h[0].mlp.c_fc
    assert type(fc) is Conv1D and fc.weight.dtype == torch.float64 and fc.training
    assert fc.weight.requires_grad is False and fc.bias.requires_grad is True
    assert model.transformer.h[1].mlp.c_fc.weight.requires_grad is True


@pytest.mark.parametrize("method", ["movement", "random", "snip", "l0"])
def test_wrapped_state_dict_resumes_the_same_masks(method):
    """A checkpoint of a wrapped model (weights + scores) restores masks and outputs exactly."""
    family = "distilbert"
    batch = make_batch(family)
    model = make_model(family)
    mplib.wrap(model, _config(family, method))
    opt = torch.optim.AdamW(mplib.param_groups(model, lr=1e-3, score_lr=0.05))
    model.train()
    for _ in range(2):
        loss_of(model, batch).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    state = model.state_dict()
    assert any(k.endswith("scores") for k in state)  # scores travel with the checkpoint

    other = make_model(family, seed=5)  # different initial weights
    mplib.wrap(other, _config(family, method, seed=7))  # and a different random-score seed
    other.load_state_dict(state)
    other.eval()
    for (n, a), (_, b) in zip(
        mplib.masked_layers(model).items(), mplib.masked_layers(other).items(), strict=True
    ):
        assert torch.equal(a.mask(), b.mask()), n
    assert torch.equal(outputs(other, batch), outputs(model, batch))
