"""Sparsity penalties (paper Table 1, erratum 3) and the distillation loss (paper §6), against
explicit loops."""

from __future__ import annotations

import math

import pytest
import torch
from _core_helpers import FAST
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import mplib
from mplib import expected_l0, l1_sigmoid


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _matrices(seed: int, shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) * 3 for s in shapes]


shape_lists = st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=4)


@FAST
@given(shape_lists, st.integers(0, 10_000))
def test_l1_sigmoid_is_mean_of_per_matrix_means(shapes, seed):
    mats = _matrices(seed, shapes)
    per_matrix = []
    for m in mats:
        total = 0.0
        for v in m.reshape(-1).tolist():
            total += _sig(v)
        per_matrix.append(total / m.numel())
    expected = sum(per_matrix) / len(per_matrix)
    assert float(l1_sigmoid(mats)) == pytest.approx(expected, rel=1e-12)


@FAST
@given(shape_lists, st.integers(0, 10_000))
def test_expected_l0_by_hand(shapes, seed):
    mats = _matrices(seed, shapes)
    shift = (2.0 / 3.0) * math.log(0.1 / 1.1)  # b log(-l/r), with S (not log S): erratum 3
    per_matrix = [sum(_sig(v - shift) for v in m.reshape(-1).tolist()) / m.numel() for m in mats]
    assert float(expected_l0(mats)) == pytest.approx(sum(per_matrix) / len(per_matrix), rel=1e-12)
    # other constants
    left, right, beta = -0.3, 1.2, 0.5
    shift = beta * math.log(-left / right)
    per_matrix = [sum(_sig(v - shift) for v in m.reshape(-1).tolist()) / m.numel() for m in mats]
    got = expected_l0(mats, left=left, right=right, beta=beta)
    assert float(got) == pytest.approx(sum(per_matrix) / len(per_matrix), rel=1e-12)


def test_penalties_are_mean_normalised_not_summed():
    # a big and a small matrix count equally (the authors' normalisation, not the paper's sum)
    big, small = torch.full((100, 10), -50.0), torch.full((1, 1), 50.0)
    assert float(l1_sigmoid([big, small])) == pytest.approx(0.5, abs=1e-12)


def test_penalties_differentiate_and_reject_empty():
    s = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    l1_sigmoid([s]).backward()
    torch.testing.assert_close(s.grad, torch.full((2, 3), 0.25 / 6, dtype=torch.float64))
    for fn in (l1_sigmoid, expected_l0):
        with pytest.raises(ValueError, match="no score tensors.*wrap the model"):
            fn([])


def test_pruner_penalty_is_lam_t_times_regulariser():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    cfg = mplib.PruningConfig(
        method="soft_movement",
        lam=10.0,
        score_init="uniform",
        score_init_value=2.0,
        target_modules=["0", "1"],
    )
    pruner = mplib.Pruner(model, cfg, total_steps=10, warmup_steps=2, cooldown_steps=2)
    scores = [m.scores for m in mplib.masked_layers(model).values()]
    assert pruner.penalty().detach().item() == 0.0  # lam_0 = 0 (cubic ramp)
    pruner.step(5)
    lam_t = 10.0 * (1 - (1 - 3 / 6) ** 3)
    assert pruner.penalty().detach().item() == pytest.approx(
        lam_t * l1_sigmoid(scores).detach().item(), rel=1e-6
    )
    pruner.step(9)
    assert pruner.penalty().detach().item() == pytest.approx(
        10.0 * l1_sigmoid(scores).detach().item(), rel=1e-6
    )

    model = nn.Sequential(nn.Linear(4, 4))
    cfg = mplib.PruningConfig(method="l0", lam=2.0, target_modules=["0"])
    pruner = mplib.Pruner(model, cfg, total_steps=10)
    s = mplib.masked_layers(model)["0"].scores
    assert pruner.penalty().detach().item() == pytest.approx(
        2.0 * expected_l0([s]).detach().item(), rel=1e-6
    )

    model = nn.Sequential(nn.Linear(4, 4))
    pruner = mplib.Pruner(
        model,
        mplib.PruningConfig(method="movement", keep_ratio=0.5, target_modules=["0"]),
        total_steps=10,
    )
    assert pruner.penalty().detach().item() == 0.0


# -- distillation --------------------------------------------------------------------------------


def distil_oracle(student, teacher, task_loss, T, a_d, a_t):
    """alpha_d T^2 (1/B) sum_b sum_c p_t log(p_t / p_s) + alpha_t * task, with explicit loops."""
    rows_s = student.reshape(-1, student.shape[-1]).tolist()
    rows_t = teacher.reshape(-1, teacher.shape[-1]).tolist()
    kl = 0.0
    for zs, zt in zip(rows_s, rows_t, strict=True):
        es = [math.exp(z / T) for z in zs]
        et = [math.exp(z / T) for z in zt]
        ps = [e / sum(es) for e in es]
        pt = [e / sum(et) for e in et]
        for c in range(len(zs)):
            kl += pt[c] * (math.log(pt[c]) - math.log(ps[c]))
    kl /= len(rows_s)
    out = a_d * T * T * kl
    if task_loss is not None and a_t != 0:
        out += a_t * task_loss
    return out


@FAST
@given(
    batch=st.integers(1, 4),
    classes=st.integers(2, 5),
    seed=st.integers(0, 10_000),
    T=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    a_d=st.floats(0, 1),
    a_t=st.floats(0, 1),
)
def test_distillation_loss_by_hand(batch, classes, seed, T, a_d, a_t):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2
    t = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2
    task = torch.tensor(0.7, dtype=torch.float64)
    got = mplib.distillation_loss(s, t, task, temperature=T, alpha_distil=a_d, alpha_task=a_t)
    assert float(got) == pytest.approx(distil_oracle(s, t, 0.7, T, a_d, a_t), rel=1e-10, abs=1e-12)


def test_distillation_t_squared_scaling_and_defaults():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 4, generator=g, dtype=torch.float64)
    t = torch.randn(3, 4, generator=g, dtype=torch.float64)
    for T in (1.0, 2.0, 3.0):
        kl_only = mplib.distillation_loss(s, t, temperature=T, alpha_distil=1.0, alpha_task=0.0)
        assert float(kl_only) == pytest.approx(distil_oracle(s, t, None, T, 1.0, 0.0), rel=1e-10)
    # the runs' defaults: T = 2, alpha_distil = 0.9, alpha_task = 0.1
    got = mplib.distillation_loss(s, t, torch.tensor(1.5, dtype=torch.float64))
    assert float(got) == pytest.approx(distil_oracle(s, t, 1.5, 2.0, 0.9, 0.1), rel=1e-10)
    # identical logits: no distillation term, just alpha_task * task
    same = mplib.distillation_loss(s, s.clone(), torch.tensor(2.0, dtype=torch.float64))
    assert float(same) == pytest.approx(0.2, abs=1e-12)


def test_distillation_sequence_logits_and_gradients():
    # (batch, positions, classes), e.g. SQuAD start logits or token tagging: positions are rows
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    got = mplib.distillation_loss(s, t, temperature=2.0, alpha_distil=1.0, alpha_task=0.0)
    assert got.detach().item() == pytest.approx(
        distil_oracle(s.detach(), t.detach(), None, 2.0, 1, 0), rel=1e-10
    )
    got.backward()
    assert t.grad is None  # the teacher is detached
    # d/dz_s of T^2 KL / B = T (p_s - p_t) / B   (B = 6 rows)
    ps = torch.softmax(s.detach() / 2, -1)
    pt = torch.softmax(t.detach() / 2, -1)
    torch.testing.assert_close(s.grad, 2.0 * (ps - pt) / 6, rtol=1e-10, atol=1e-12)


def test_distillation_errors():
    s, t = torch.zeros(2, 3), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="differ in shape.*same task head and label count"):
        mplib.distillation_loss(s, t, torch.tensor(0.0))
    with pytest.raises(ValueError, match="alpha_task > 0 needs task_loss.*alpha_task=0"):
        mplib.distillation_loss(s, s)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        mplib.distillation_loss(s, s, torch.tensor(0.0), temperature=0.0)
