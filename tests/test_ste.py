"""Straight-through estimators (paper §4, Eqs. 2-3; conclusion C14), against plain autograd.

Oracle: the same loss computed with ``W' = W ⊙ M`` as a *leaf* tensor (``M`` held constant), so
plain autograd gives ``G = dL/dW'``. The identities to check are

    dL/dS = G ⊙ W,    dL/dW = G ⊙ M,    and with SGD from S = 0:  S^(T) = -alpha * sum_t G_t ⊙ W_t.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _core_helpers import FAST
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from transformers.pytorch_utils import Conv1D

import mplib
from mplib.ste import sigmoid_threshold_ste, threshold_ste, topk_ste

STE_METHODS = {
    # keep half / threshold in the middle of U(-1, 1) scores, so both kept and pruned entries exist
    "movement": dict(method="movement", keep_ratio=0.5),
    "threshold": dict(method="threshold", tau=0.0),
    "soft_movement": dict(method="soft_movement", tau=0.5),  # sigmoid(S) > 0.5  <=>  S > 0
}


def make_layer(
    method: str,
    *,
    conv1d: bool = False,
    seed: int = 0,
    init="uniform",
    init_value=1.0,
    in_f: int = 5,
    out_f: int = 4,
    **overrides,
):
    torch.manual_seed(seed)
    base = Conv1D(out_f, in_f) if conv1d else nn.Linear(in_f, out_f)
    base = base.to(torch.float64)
    if conv1d:  # Conv1D starts with a zero bias; make it non-trivial
        with torch.no_grad():
            base.bias.normal_()
    cfg = mplib.PruningConfig(
        **{**STE_METHODS[method], "score_init": init, "score_init_value": init_value, **overrides}
    )
    return mplib.MaskedLinear(base, cfg, name="layer")


def smooth_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((out - target) ** 2).sum() + torch.sin(out).sum()


def oracle_grads(layer, x, target):
    """``G = dL/dW'`` and ``dL/db`` with ``W' = W ⊙ M`` a leaf (the mask is a constant)."""
    mask = layer.mask()
    w_masked = (layer.weight.detach() * mask).requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    out = x @ w_masked + b if layer.transposed else x @ w_masked.T + b
    smooth_loss(out, target).backward()
    return w_masked.grad, b.grad, mask, out.detach()


@pytest.mark.parametrize("conv1d", [False, True], ids=["Linear", "Conv1D"])
@pytest.mark.parametrize("method", sorted(STE_METHODS))
def test_ste_gradient_identities(method, conv1d):
    layer = make_layer(method, conv1d=conv1d)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    target = torch.randn(7, 4, generator=g, dtype=torch.float64)

    out = layer(x)
    smooth_loss(out, target).backward()
    G, grad_b, mask, oracle_out = oracle_grads(layer, x, target)

    torch.testing.assert_close(out.detach(), oracle_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.scores.grad, G * layer.weight.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, G * mask, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, grad_b, rtol=1e-12, atol=1e-12)

    pruned = mask == 0
    assert 0 < int(pruned.sum()) < mask.numel()
    # pruned entries: a score gradient (they can come back) but exactly no weight gradient
    assert (layer.scores.grad[pruned] != 0).all()
    assert torch.equal(
        layer.weight.grad[pruned], torch.zeros(int(pruned.sum()), dtype=torch.float64)
    )
    assert (layer.weight.grad[~pruned] != 0).all()


def _sgd_run(
    method: str,
    train_weights: bool,
    steps: int = 15,
    score_lr: float = 0.3,
    weight_lr: float = 0.05,
):
    cfg = {"soft_movement": dict(tau=0.4)}.get(method, {})  # S = 0 keeps all at the start
    layer = make_layer(method, init="constant", init_value=0.0, **cfg)
    if not train_weights:
        layer.weight.requires_grad_(False)
        layer.bias.requires_grad_(False)
    assert torch.equal(layer.scores, torch.zeros_like(layer.scores))  # S^(0) = 0
    opt_s = torch.optim.SGD([layer.scores], lr=score_lr)
    opt_w = torch.optim.SGD([layer.weight, layer.bias], lr=weight_lr) if train_weights else None
    g = torch.Generator().manual_seed(2)
    acc = torch.zeros_like(layer.scores)
    masks, weights = set(), set()
    for _ in range(steps):
        x = torch.randn(6, 5, generator=g, dtype=torch.float64)
        target = torch.randn(6, 4, generator=g, dtype=torch.float64)
        G, _, mask, _ = oracle_grads(layer, x, target)  # before the update: G_t and W_t
        acc += G * layer.weight.detach()
        masks.add(tuple(mask.reshape(-1).tolist()))
        weights.add(tuple(layer.weight.detach().reshape(-1).tolist()))
        smooth_loss(layer(x), target).backward()
        opt_s.step()
        opt_s.zero_grad()
        if opt_w:
            opt_w.step()
            opt_w.zero_grad()
    return layer, acc, masks, weights


@pytest.mark.parametrize("train_weights", [False, True], ids=["frozen_W", "trained_W"])
@pytest.mark.parametrize("method", sorted(STE_METHODS))
def test_scores_accumulate_movement_under_sgd(method, train_weights):
    """Paper Eq. (3): from S = 0 with plain SGD, S^(T) = -alpha_S sum_t (dL/dW')^(t) ⊙ W^(t)."""
    score_lr = 0.3
    layer, acc, masks, weights = _sgd_run(method, train_weights, score_lr=score_lr)
    torch.testing.assert_close(layer.scores.detach(), -score_lr * acc, rtol=1e-10, atol=1e-12)
    assert len(masks) > 1  # the mask moved during the run: the identity is not trivial
    assert (len(weights) > 1) == train_weights


@FAST
@given(
    shape=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 1000),
    k_frac=st.floats(0, 1),
    tau=st.floats(-1, 1),
)
def test_ste_functions_forward_binary_backward_identity(shape, seed, k_frac, tau):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(shape, generator=g, dtype=torch.float64)
    k = round(k_frac * s.numel())
    sig_tau = (tau + 1) / 2  # in [0, 1]
    for fn, arg, forward in (
        (topk_ste, k, None),
        (threshold_ste, tau, (s.detach() > tau)),
        (sigmoid_threshold_ste, sig_tau, (torch.sigmoid(s.detach()) > sig_tau)),
    ):
        m = fn(s, arg)
        assert set(m.detach().unique().tolist()) <= {0.0, 1.0}
        if forward is not None:
            assert torch.equal(m.detach(), forward.to(s.dtype))
        else:
            assert int(m.sum()) == k
        (grad,) = torch.autograd.grad((m * upstream).sum(), s)
        # identity: no sigmoid'(S) factor for soft movement, no zero derivative for Top_k
        assert torch.equal(grad, upstream)


def test_magnitude_has_no_scores_and_masks_by_abs_weight():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    layer = mplib.MaskedLinear(lin, mplib.PruningConfig(method="magnitude", keep_ratio=0.5))
    assert layer.scores is None
    assert layer.weight is lin.weight and layer.bias is lin.bias
    x = torch.randn(2, 4)
    F.mse_loss(layer(x), torch.zeros(2, 3)).backward()
    mask = layer.mask()
    assert torch.equal(lin.weight.grad == 0, mask == 0)


# -- the contrast baselines: scores accumulated by a hook, no straight-through -------------------


@pytest.mark.parametrize("method", ["accumulated_movement", "snip"])
def test_hook_scores_accumulate_weight_times_gradient(method):
    torch.manual_seed(0)
    lin = nn.Linear(5, 4).double()
    layer = mplib.MaskedLinear(lin, mplib.PruningConfig(method=method, keep_ratio=0.5))
    assert not isinstance(layer.scores, nn.Parameter)  # a buffer: the optimizer never sees it
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a ranking, so that half the entries are pruned
        layer.scores.copy_(torch.randn(4, 5, generator=g, dtype=torch.float64))
    layer.train()
    total = torch.zeros_like(layer.scores)
    s_start = layer.scores.clone()
    for _ in range(2):  # two backward passes add up
        s0 = layer.scores.clone()
        mask = layer.mask()
        x = torch.randn(6, 5, generator=g, dtype=torch.float64)
        target = torch.randn(6, 4, generator=g, dtype=torch.float64)
        # oracle: plain autograd on an unmasked copy holding W ⊙ M, then times the mask
        copy = nn.Linear(5, 4).double()
        with torch.no_grad():
            copy.weight.copy_(lin.weight * mask)
            copy.bias.copy_(lin.bias)
        smooth_loss(copy(x), target).backward()
        grad_w = copy.weight.grad * mask
        expected_step = -lin.weight.detach() * grad_w
        if method == "snip":
            expected_step = expected_step.abs()
        total += expected_step

        smooth_loss(layer(x), target).backward()
        torch.testing.assert_close(lin.weight.grad, grad_w, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.scores, s0 + expected_step, rtol=1e-12, atol=1e-12)
        pruned = mask == 0
        assert pruned.any()
        assert torch.equal(layer.scores[pruned], s0[pruned])  # no re-entry through the scores
        lin.weight.grad = None
    torch.testing.assert_close(layer.scores, s_start + total, rtol=1e-12, atol=1e-12)

    # eval mode and no_grad forwards do not accumulate
    s1 = layer.scores.clone()
    layer.eval()
    smooth_loss(layer(x), target).backward()
    layer.train()
    with torch.no_grad():
        layer(x)
    assert torch.equal(layer.scores, s1)


def test_from_zero_accumulated_movement_is_minus_w_times_grad():
    torch.manual_seed(1)
    lin = nn.Linear(3, 2).double()
    layer = mplib.MaskedLinear(
        lin, mplib.PruningConfig(method="accumulated_movement", keep_ratio=1.0)
    )
    x = torch.randn(4, 3, dtype=torch.float64)
    (layer(x) ** 2).sum().backward()
    w = lin.weight.detach().clone().requires_grad_(True)
    (torch.nn.functional.linear(x, w, lin.bias.detach()) ** 2).sum().backward()
    torch.testing.assert_close(layer.scores, -lin.weight.detach() * w.grad, rtol=1e-12, atol=0)


def test_movement_scores_of_pruned_entries_do_move():
    """The contrast: under the straight-through estimator a pruned weight's score changes."""
    layer = make_layer("movement")
    s0 = layer.scores.detach().clone()
    pruned = layer.mask() == 0
    opt = torch.optim.SGD([layer.scores], lr=0.1)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    smooth_loss(layer(x), torch.zeros(6, 4, dtype=torch.float64)).backward()
    opt.step()
    assert (layer.scores.detach()[pruned] != s0[pruned]).all()
