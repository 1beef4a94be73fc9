"""Hard-concrete gates (Louizos et al. 2018; paper §4, Eq. 4) against closed forms, numerical
integration and finite differences."""

from __future__ import annotations

import math

import pytest
import torch
from _core_helpers import FAST
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import mplib
from mplib.methods import l0 as hc

L, R, B = hc.LEFT, hc.RIGHT, hc.BETA
S_VALUES = [-3.0, -1.0, -0.3, 0.0, 0.5, 2.197, 4.0]
N_SAMPLES = 200_000


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _gate(u: float, s: float) -> float:
    """One hard-concrete gate from its uniform noise, written out in scalar math."""
    logit_u = math.log(u) - math.log(1.0 - u)
    z = (R - L) * _sigmoid((logit_u + s) / B) + L
    return min(1.0, max(0.0, z))


def _samples(s: float, n: int = N_SAMPLES, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return hc.sample_gates(torch.full((n,), s, dtype=torch.float64), generator=g)


def test_default_constants_are_the_papers():
    assert (L, R, B) == (-0.1, 1.1, 2.0 / 3.0)


@pytest.mark.parametrize("s", S_VALUES)
def test_sample_statistics_match_closed_forms(s):
    m = _samples(s)
    assert ((m >= 0) & (m <= 1)).all()
    n = m.numel()

    def within_binomial(freq: float, p: float):
        std = math.sqrt(max(p * (1 - p), 1e-12) / n)
        assert abs(freq - p) <= 5 * std + 1e-6, (freq, p, std)

    # P(gate > 0) = sigmoid(S - b log(-l/r))  (the expected-L0 term, erratum 3: S, not log S)
    p_nonzero = _sigmoid(s - B * math.log(-L / R))
    within_binomial(float((m > 0).double().mean()), p_nonzero)
    assert float(hc.prob_nonzero(torch.tensor(s, dtype=torch.float64))) == pytest.approx(
        p_nonzero, rel=1e-12
    )
    # P(gate == 1): Z >= 1  <=>  logit(u) >= b log((1 - l)/(r - 1)) - S
    p_one = _sigmoid(s - B * math.log((1 - L) / (R - 1)))
    within_binomial(float((m == 1).double().mean()), p_one)
    assert float(hc.prob_one(torch.tensor(s, dtype=torch.float64))) == pytest.approx(
        p_one, rel=1e-12
    )
    within_binomial(float((m == 1).double().mean()), float(hc.prob_one(torch.tensor(s))))
    # the CDF at interior points and at 0 (the point mass) against the empirical CDF
    for y in (0.0, 0.1, 0.5, 0.9, 0.999):
        cdf = float(hc.gate_cdf(y, torch.tensor(s, dtype=torch.float64)))
        within_binomial(float((m <= y).double().mean()), cdf)

    # mean gate vs a midpoint rule over u in (0, 1) (the integrand is bounded and monotone)
    k = 400_000
    u = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    z = (R - L) * torch.sigmoid((torch.log(u) - torch.log1p(-u) + s) / B) + L
    mean_exact = float(z.clamp(0, 1).mean())
    std = float(m.std())
    assert abs(float(m.mean()) - mean_exact) <= 5 * std / math.sqrt(n) + 1e-5


def test_midpoint_integration_agrees_with_scalar_gate():
    # the vectorised integrand above is the scalar definition
    for s in (-1.0, 0.7):
        for u in (1e-4, 0.2, 0.5, 0.93, 1 - 1e-4):
            t = torch.tensor([u], dtype=torch.float64)
            z = (R - L) * torch.sigmoid((torch.log(t) - torch.log1p(-t) + s) / B) + L
            assert float(z.clamp(0, 1)) == pytest.approx(_gate(u, s), abs=1e-12)


def test_sample_uses_the_generator_and_the_formula():
    s = torch.linspace(-3, 3, 50, dtype=torch.float64)
    a = hc.sample_gates(s, generator=torch.Generator().manual_seed(7))
    b = hc.sample_gates(s, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    u = torch.rand(s.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expected = torch.tensor(
        [_gate(float(ui), float(si)) for ui, si in zip(u, s, strict=True)], dtype=torch.float64
    )
    torch.testing.assert_close(a, expected, rtol=0, atol=1e-12)


def test_sample_gradient_matches_finite_differences_and_eq4():
    s = torch.linspace(-2.5, 2.5, 41, dtype=torch.float64, requires_grad=True)
    weights = torch.linspace(0.5, 1.5, 41, dtype=torch.float64)  # a generic linear functional
    seed = 11

    def f(scores):
        gen = torch.Generator().manual_seed(seed)  # the same noise u for every evaluation
        return (hc.sample_gates(scores, generator=gen) * weights).sum()

    (grad,) = torch.autograd.grad(f(s), s)
    h = 1e-6
    fd = torch.empty_like(grad)
    with torch.no_grad():
        for i in range(s.numel()):
            e = torch.zeros_like(s)
            e[i] = h
            fd[i] = (f(s + e) - f(s - e)) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-6)

    # paper Eq. (4): dM/dS = (r - l)/b * sbar (1 - sbar) * 1[0 <= Z <= 1]
    u = torch.rand(s.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = u.clamp(hc.U_EPS, 1 - hc.U_EPS)
    sbar = torch.sigmoid((torch.log(u) - torch.log1p(-u) + s.detach()) / B)
    z = (R - L) * sbar + L
    eq4 = (R - L) / B * sbar * (1 - sbar) * ((z >= 0) & (z <= 1)).double()
    torch.testing.assert_close(grad, weights * eq4, rtol=1e-12, atol=1e-12)
    assert (eq4 == 0).any() and (eq4 > 0).any()  # both clamped and live gates were exercised


@FAST
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=30))
def test_binary_gates_is_indicator_of_positive_score(values):
    for dtype in (torch.float32, torch.float64):
        s = torch.tensor(values, dtype=dtype)
        assert torch.equal(hc.binary_gates(s), (s > 0).to(dtype))


def test_binary_gates_at_and_around_zero():
    # the cut is exactly 0 for l + r = 1: S = 0 is *not* kept, the smallest positive score is
    for dtype in (torch.float32, torch.float64):
        tiny = torch.finfo(dtype).tiny
        s = torch.tensor([0.0, -0.0, tiny, -tiny, 1e-30, -1e-30, 1e-17, -1e-17], dtype=dtype)
        assert hc.binary_gates(s).tolist() == [0, 0, 1, 0, 1, 0, 1, 0]
    # equivalently: deterministic gate > 1/2 (away from S = 0, where that float expression
    # itself rounds to 0.5000000000000001)
    s = torch.linspace(-1, 1, 201, dtype=torch.float64)
    s = s[s.abs() > 1e-12]
    assert torch.equal(hc.binary_gates(s), (hc.deterministic_gates(s) > 0.5).double())


def test_binary_gates_other_stretch_is_deterministic_gate_above_half():
    s = torch.linspace(-3, 3, 601, dtype=torch.float64)
    left, right = -0.2, 1.5
    cut = math.log((0.5 - left) / (right - 0.5))
    expected = (s > cut).double()
    assert torch.equal(hc.binary_gates(s, left=left, right=right), expected)
    dg = hc.deterministic_gates(s, left=left, right=right)
    away = (s - cut).abs() > 1e-9
    assert torch.equal((dg > 0.5).double()[away], expected[away])


def test_deterministic_gates_formula():
    for v in (-3.0, -0.5, 0.0, 0.4, 3.0):
        expected = min(1.0, max(0.0, (R - L) * _sigmoid(v) + L))
        got = float(hc.deterministic_gates(torch.tensor(v, dtype=torch.float64)))
        assert got == pytest.approx(expected, abs=1e-15)


def test_l0_layer_gradient_is_movement_times_density():
    """Paper Eq. (4) through a MaskedLinear: dL/dS = (dL/dW') ⊙ W ⊙ f(sbar)."""
    torch.manual_seed(0)
    lin = nn.Linear(5, 4).double()
    cfg = mplib.PruningConfig(method="l0", score_init="uniform", score_init_value=2.0)
    layer = mplib.MaskedLinear(lin, cfg)
    layer.train()
    x = torch.randn(3, 5, dtype=torch.float64)
    torch.manual_seed(123)
    out = layer(x)
    (out**2).sum().backward()
    torch.manual_seed(123)  # the layer draws its noise from the global generator: replay it
    u = torch.rand(layer.scores.shape, dtype=torch.float64).clamp(hc.U_EPS, 1 - hc.U_EPS)
    sbar = torch.sigmoid((torch.log(u) - torch.log1p(-u) + layer.scores.detach()) / B)
    z = (R - L) * sbar + L
    gate = z.clamp(0, 1)
    w_masked = (lin.weight.detach() * gate).requires_grad_(True)
    (torch.nn.functional.linear(x, w_masked, lin.bias.detach()) ** 2).sum().backward()
    G = w_masked.grad
    f = (R - L) / B * sbar * (1 - sbar) * ((z >= 0) & (z <= 1)).double()
    torch.testing.assert_close(
        layer.scores.grad, G * lin.weight.detach() * f, rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(lin.weight.grad, G * gate, rtol=1e-12, atol=1e-12)
    # eval: the binary gate 1[S > 0], no noise
    layer.eval()
    assert torch.equal(layer.forward_mask(), (layer.scores.detach() > 0).double())
    assert torch.equal(layer.mask(), (layer.scores.detach() > 0).double())


def test_l0_config_defaults_follow_the_authors():
    cfg = mplib.PruningConfig(method="l0")
    assert cfg.score_init_value == pytest.approx(math.log(9))  # logit(0.9) = 2.197
    assert cfg.lam == 0.0 and cfg.lam_schedule == "constant"
    layer = mplib.MaskedLinear(nn.Linear(3, 2), cfg)
    assert torch.allclose(layer.scores, torch.full((2, 3), math.log(9)))
    assert torch.equal(layer.mask(), torch.ones(2, 3))


def _empirical_cdf_by_quadrature(y: float, s: float, k: int = 200_000) -> float:
    """P(gate <= y) as the measure of {u in (0, 1): gate(u) <= y}, by a midpoint rule."""
    u = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    z = (R - L) * torch.sigmoid((torch.log(u) - torch.log1p(-u) + s) / B) + L
    return float((z.clamp(0, 1) <= y).double().mean())


@pytest.mark.parametrize("s", [-2.0, 0.0, 0.8, 2.197])
def test_gate_cdf_matches_quadrature_over_the_noise(s):
    for y in (0.0, 0.05, 0.3, 0.5, 0.77, 0.99, 1.0):
        got = float(hc.gate_cdf(y, torch.tensor(s, dtype=torch.float64)))
        # the gate is increasing in u, so the set is an interval; the midpoint rule is exact
        # up to one cell
        assert got == pytest.approx(_empirical_cdf_by_quadrature(y, s), abs=2e-5), y


def test_gate_cdf_edges_and_broadcasting():
    s = torch.linspace(-4, 4, 9, dtype=torch.float64)
    torch.testing.assert_close(hc.gate_cdf(0.0, s), 1 - hc.prob_nonzero(s), rtol=0, atol=1e-15)
    assert torch.equal(hc.gate_cdf(1.0, s), torch.ones_like(s))
    below_one = hc.gate_cdf(1 - 1e-12, s)  # the jump at 1 is P(gate = 1)
    torch.testing.assert_close(1 - below_one, hc.prob_one(s), rtol=0, atol=1e-9)
    ys = torch.tensor([[0.0], [0.5], [1.0]], dtype=torch.float64)
    grid = hc.gate_cdf(ys, s)
    assert grid.shape == (3, 9)
    assert (grid[1:] >= grid[:-1]).all()  # non-decreasing in y
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            hc.gate_cdf(bad, s)


def _l0_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    # scores spread over (-4, 4): some gates closed, some fractional, some fully open
    cfg = mplib.PruningConfig(method="l0", score_init="uniform", score_init_value=4.0,
                              target_modules=["0", "2"])
    mplib.wrap(net, cfg)
    return net


def _forward_by_hand(net: nn.Sequential, x: torch.Tensor, gate) -> torch.Tensor:
    h = x
    for layer in net:
        if isinstance(layer, mplib.MaskedLinear):
            g = torch.tensor([[gate(float(v)) for v in row] for row in layer.scores.detach()],
                             dtype=torch.float64)
            h = torch.nn.functional.linear(h, layer.weight.detach() * g, layer.bias.detach())
        else:
            h = layer(h)
    return h


def test_continuous_eval_uses_louizos_gate_and_restores_binary():
    net = _l0_net()
    net.eval()
    x = torch.randn(4, 6, dtype=torch.float64)

    def louizos(v):  # min(1, max(0, (r - l) sigmoid(S) + l)), scalar math
        return min(1.0, max(0.0, (R - L) * _sigmoid(v) + L))

    def binary(v):
        return 1.0 if v > 0 else 0.0

    scores = torch.cat([m.scores.detach().flatten() for m in mplib.masked_layers(net).values()])
    assert ((scores > math.log(-L / R)) & (scores <= 0)).any()  # the two gates really differ
    masks_before = [m.mask().clone() for m in mplib.masked_layers(net).values()]
    with torch.no_grad():
        out_binary = net(x)
        with hc.continuous_eval(net) as same:
            assert same is net
            out_cont = net(x)
            masks_inside = [m.mask() for m in mplib.masked_layers(net).values()]
        out_after = net(x)
    torch.testing.assert_close(out_binary, _forward_by_hand(net, x, binary), rtol=0, atol=1e-12)
    torch.testing.assert_close(out_cont, _forward_by_hand(net, x, louizos), rtol=0, atol=1e-12)
    assert not torch.allclose(out_cont, out_binary)
    assert torch.equal(out_after, out_binary)
    # mask(), bake and reports stay binary inside the block
    assert all(torch.equal(a, b) for a, b in zip(masks_before, masks_inside, strict=True))


def test_continuous_eval_leaves_training_sampling_and_restores_after_errors():
    net = _l0_net(1)
    net.train()
    x = torch.randn(4, 6, dtype=torch.float64)
    with hc.continuous_eval(net):
        torch.manual_seed(5)
        inside = net(x)
    torch.manual_seed(5)
    outside = net(x)
    torch.testing.assert_close(inside, outside, rtol=0, atol=0)  # the same noise, same sample
    net.eval()
    with pytest.raises(RuntimeError, match="boom"), hc.continuous_eval(net):
        raise RuntimeError("boom")
    layer = next(iter(mplib.masked_layers(net).values()))
    assert layer.rule.eval_gate == "binary"
    with torch.no_grad():
        expected = layer.weight * (layer.scores > 0).double()
        torch.testing.assert_close(layer.masked_weight(), expected, rtol=0, atol=0)


def test_continuous_eval_refuses_a_model_without_l0_layers():
    plain = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="method 'l0'"), hc.continuous_eval(plain):
        pass
    mplib.wrap(plain, mplib.PruningConfig(method="movement", keep_ratio=0.5, target_modules="0"))
    with pytest.raises(ValueError, match="wrap it first"), hc.continuous_eval(plain):
        pass
