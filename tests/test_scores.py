"""mplib.lab.scores: the trace's sums against plain SGD and against loops over recorded
gradients; mask overlap and rank correlation against slow pure-Python oracles."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from _core_helpers import FAST
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import mplib
from mplib.lab.scores import SUMS, ScoreTrace, mask_overlap, rank_correlation
from mplib.optim import linear_warmup_decay

T, WARMUP, COOLDOWN = 30, 5, 5


def toy_run(score_optimizer, *, clip=0.5):
    """A float64 MLP whose first layer is movement-pruned to 40 %; weights and scores in two
    optimizers, the scores' rate on a warm-up/decay schedule. Returns the layer, the trace and an
    independent record of every (lr, dL/dS) the scores' optimizer applied."""
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(fc=nn.Linear(6, 5), act=nn.Tanh(), out=nn.Linear(5, 2)))
    net = net.to(torch.float64)
    pruner = mplib.Pruner(net, mplib.PruningConfig(method="movement", keep_ratio=0.4,
                                                   target_modules=["fc"]),
                          total_steps=T, warmup_steps=WARMUP, cooldown_steps=COOLDOWN)
    layer = net.fc
    weights = [p for n, p in net.named_parameters() if not n.endswith("scores")]
    opt_w = torch.optim.SGD(weights, lr=0.05)
    opt_s = score_optimizer([layer.scores])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt_s, lambda t: linear_warmup_decay(t, warmup_steps=WARMUP, total_steps=T))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    record = []
    with ScoreTrace(mplib.masked_layers(net)) as trace:
        for t in range(T):
            pruner.step(t)
            idx = torch.randint(0, 64, (16,), generator=gen)
            F.mse_loss(net(x[idx]), y[idx]).backward()
            torch.nn.utils.clip_grad_norm_(list(net.parameters()), clip)
            record.append((opt_s.param_groups[0]["lr"], layer.scores.grad.detach().clone()))
            opt_w.step()
            opt_s.step()
            sched.step()
            opt_w.zero_grad()
            opt_s.zero_grad()
    return layer, trace, record


def test_sgd_sum_is_the_score_under_sgd():
    """Eq. 3 with a learning-rate schedule: SGD from S = 0 builds exactly -sum alpha_t g_t."""
    layer, trace, _ = toy_run(lambda p: torch.optim.SGD(p, lr=0.3))
    assert trace.steps == T  # the weights' optimizer is not counted
    assert torch.allclose(trace.sums["fc"]["sgd"], layer.scores.detach(), rtol=0, atol=1e-12)
    assert layer.scores.detach().abs().max() > 1e-3  # the check is not vacuous


def loop_sums(record) -> dict:
    """Every sum of the module docstring, one entry at a time, from the recorded (lr, g)."""
    shape = record[0][1].shape
    out = {k: torch.zeros(shape, dtype=torch.float64) for k in SUMS}
    for i in range(shape[0]):
        for j in range(shape[1]):
            sq = 0.0
            acc = dict.fromkeys(SUMS, 0.0)
            for t, (lr, g) in enumerate(record, start=1):
                v = float(g[i, j])
                sq += v * v
                rms = math.sqrt(sq / t)
                acc["sgd"] += -lr * v
                acc["signs"] += -lr * (v > 0) + lr * (v < 0)
                acc["movement"] += -v
                acc["saliency"] += abs(v)
                acc["sq"] += v * v
                acc["normalised"] += -lr * v / rms if rms > 0 else 0.0
            for k in SUMS:
                out[k][i, j] = acc[k]
    return out


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_trace_sums_equal_loops_over_the_applied_gradients(name):
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.3),
           "adam": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.0)}[name]
    layer, trace, record = toy_run(opt)
    expected = loop_sums(record)
    for k in SUMS:
        assert torch.allclose(trace.sums["fc"][k], expected[k], rtol=1e-10, atol=1e-14), k
    pruned = layer.mask() == 0
    assert pruned.any() and (trace.sums["fc"]["saliency"][pruned] > 0).all()  # ungated


def test_trace_stops_when_the_block_ends():
    layer, trace, _ = toy_run(lambda p: torch.optim.SGD(p, lr=0.3))
    before = {k: v.clone() for k, v in trace.sums["fc"].items()}
    layer.scores.grad = torch.ones_like(layer.scores)
    torch.optim.SGD([layer.scores], lr=0.1).step()
    assert trace.steps == T
    assert all(torch.equal(before[k], trace.sums["fc"][k]) for k in SUMS)


def test_trace_keeps_the_starting_weights():
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(fc=nn.Linear(4, 3)))
    mplib.wrap(net, mplib.PruningConfig(method="movement", keep_ratio=0.5, target_modules=["fc"]))
    trace = ScoreTrace(mplib.masked_layers(net))
    w0 = net.fc.weight.detach().clone()
    with torch.no_grad():
        net.fc.weight.add_(1.0)
    assert torch.equal(trace.start["fc"], w0)


def test_trace_refuses_layers_without_learned_scores():
    net = nn.Sequential(OrderedDict(fc=nn.Linear(4, 3)))
    mplib.wrap(net, mplib.PruningConfig(method="magnitude", keep_ratio=0.5, target_modules=["fc"]))
    with pytest.raises(ValueError, match="method='movement'"):
        ScoreTrace(mplib.masked_layers(net))
    with pytest.raises(ValueError, match="at least one"):
        ScoreTrace({})


# -- mask overlap -----------------------------------------------------------------------------
@FAST
@given(bits=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_mask_overlap_equals_sets(bits):
    a = torch.tensor([p for p, _ in bits])
    b = torch.tensor([q for _, q in bits])
    set_a = {i for i, (p, _) in enumerate(bits) if p}
    set_b = {i for i, (_, q) in enumerate(bits) if q}
    if not set_a:
        with pytest.raises(ValueError, match="no entry"):
            mask_overlap(a, b)
        return
    assert mask_overlap(a.float(), b.float()) == len(set_a & set_b) / len(set_a)


def test_mask_overlap_shape_mismatch():
    with pytest.raises(ValueError, match="same matrix"):
        mask_overlap(torch.ones(2, 3), torch.ones(3, 2))


# -- rank correlation --------------------------------------------------------------------------
def oracle_spearman(xs: list[float], ys: list[float]) -> float:
    """Pearson correlation of average ranks, by loops."""
    def ranks(v):
        out = [0.0] * len(v)
        for i, a in enumerate(v):
            below = sum(b < a for b in v)
            equal = sum(b == a for b in v)
            out[i] = below + (equal - 1) / 2
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


@FAST
@given(pairs=st.lists(st.tuples(st.integers(-4, 4), st.floats(-1e3, 1e3, allow_nan=False)),
                      min_size=2, max_size=40))
def test_rank_correlation_equals_oracle_with_ties(pairs):
    xs = [float(p) for p, _ in pairs]
    ys = [q for _, q in pairs]
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        with pytest.raises(ValueError, match="constant"):
            rank_correlation(torch.tensor(xs), torch.tensor(ys, dtype=torch.float64))
        return
    got = rank_correlation(torch.tensor(xs).view(-1, 1), torch.tensor(ys, dtype=torch.float64)
                           .view(-1, 1))
    assert got == pytest.approx(oracle_spearman(xs, ys), abs=1e-12)


def test_rank_correlation_of_monotone_maps():
    x = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert rank_correlation(x, x.exp()) == pytest.approx(1.0)
    assert rank_correlation(x, -(x ** 3)) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="shapes"):
        rank_correlation(x, x[:10])
