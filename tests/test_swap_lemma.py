"""Paper appendix A.1 (conclusion C15): when the single active connection of a Top-1 movement
mask is swapped, the loss does not increase to first order; ranking by |S| or by the most
negative score has no such guarantee.

Toy: ``a = (W ⊙ M) x`` with ``M = Top_1(S)`` (k = 1), squared error ``L = 1/2 ||a - y||^2`` on a
fresh batch each step, plain SGD on ``S`` (straight-through) and on ``W`` (small rate). For this
loss the Taylor expansion is exact at second order:

    L(a') - L(a) = (a - y) . (a' - a) + 1/2 ||a' - a||^2 ,

so "no increase up to second order" is the exact statement ``first-order term <= 0``, i.e.
``Delta L <= 1/2 ||Delta a||^2``, both measured on the batch of step t.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mplib
from mplib.topk import topk_mask

M_OUT, N_IN, BATCH = 3, 4, 5
SCORE_LR, WEIGHT_LR = 0.5, 0.01


def _data(g):
    x = torch.randn(BATCH, N_IN, generator=g, dtype=torch.float64)
    teacher = torch.randn(M_OUT, N_IN, generator=g, dtype=torch.float64)
    return x, x @ teacher.T


def _loss(a, y):
    return 0.5 * ((a - y) ** 2).sum()


def _swap_record(a0, a1, y):
    """(Delta L, first-order term, second-order term) of one step, on that step's batch."""
    da = a1 - a0
    return (
        float(_loss(a1, y) - _loss(a0, y)),
        float(((a0 - y) * da).sum()),
        float(0.5 * (da**2).sum()),
    )


def movement_swaps(seed: int, steps: int = 200):
    """The library's MaskedLinear(movement, Top-1), trained by SGD; records every swap."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(N_IN, M_OUT, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(M_OUT, N_IN, generator=g, dtype=torch.float64))
    layer = mplib.MaskedLinear(
        lin, mplib.PruningConfig(method="movement", keep_ratio=1 / (M_OUT * N_IN))
    )
    assert layer.kept_count() == 1
    opt = torch.optim.SGD(
        [{"params": [layer.scores], "lr": SCORE_LR}, {"params": [lin.weight], "lr": WEIGHT_LR}]
    )
    swaps = []
    for _ in range(steps):
        x, y = _data(g)
        m0 = layer.mask()
        a0 = layer(x)
        opt.zero_grad()
        _loss(a0, y).backward()
        opt.step()
        m1 = layer.mask()
        assert int(m1.sum()) == 1
        with torch.no_grad():
            a1 = layer(x)
        if not torch.equal(m0, m1):
            swaps.append(_swap_record(a0.detach(), a1, y))
    return swaps


def control_swaps(seed: int, rank, steps: int = 200):
    """Same toy and the same straight-through score update, but the active connection is the
    Top-1 of ``rank(S)``: ``|S|`` (Ding et al.) or ``-S`` (the negative threshold M = S < tau)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(M_OUT, N_IN, generator=g, dtype=torch.float64)
    s = torch.zeros_like(w)
    swaps = []
    for _ in range(steps):
        x, y = _data(g)
        m0 = topk_mask(rank(s), 1)
        a0 = x @ (w * m0).T
        grad_w_masked = (a0 - y).T @ x  # dL/dW' for W' = W ⊙ M
        s = s - SCORE_LR * grad_w_masked * w  # straight-through: dL/dS = dL/dW' ⊙ W
        w = w - WEIGHT_LR * grad_w_masked * m0
        m1 = topk_mask(rank(s), 1)
        if not torch.equal(m0, m1):
            swaps.append(_swap_record(a0, x @ (w * m1).T, y))
    return swaps


@pytest.mark.parametrize("seed", range(4))
def test_movement_swaps_never_increase_loss_to_first_order(seed):
    swaps = movement_swaps(seed)
    assert len(swaps) >= 20  # the Top-1 connection does change: the check is not vacuous
    for delta, first, second in swaps:
        assert abs(delta - (first + second)) <= 1e-9 * (1 + abs(delta))  # exact expansion
        assert first <= 1e-12
        assert delta <= second + 1e-12  # Delta L <= second-order term


@pytest.mark.parametrize("seed", range(4))
def test_control_rankings_can_increase_the_loss(seed):
    most_negative = control_swaps(seed, lambda s: -s)
    assert most_negative
    # the inequality (7) reverses: every swap has a non-negative first-order term ...
    assert all(first >= -1e-12 for _, first, _ in most_negative)
    # ... and the loss goes up
    assert any(delta > 0 for delta, _, _ in most_negative)
    assert any(first > 1e-6 for _, first, _ in most_negative)

    by_abs = control_swaps(seed, torch.abs)
    assert by_abs
    assert any(first > 1e-6 and delta > 0 for delta, first, _ in by_abs)


def test_control_with_identity_ranking_reproduces_the_library():
    """The hand-written control loop with rank = identity is movement pruning: same swaps."""
    seed = 0
    mine = control_swaps(seed, lambda s: s)
    lib = movement_swaps(seed)
    assert len(mine) == len(lib)
    for a, b in zip(mine, lib, strict=True):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
