"""Cubic sparsity schedule with warm-up and cool-down (paper §3, Eq. 5, code form; erratum 2)."""

from __future__ import annotations

import math

import pytest
from _core_helpers import FAST
from hypothesis import assume, given
from hypothesis import strategies as st

import mplib
from mplib.schedule import (
    check_schedule,
    cubic_schedule,
    exponential_schedule,
    linear_schedule,
    progress,
)


def oracle(t, T, ti, tf, vi, vf):
    """The authors' code form, written out again: before and at the end of warm-up the initial
    value, after ``T - t_f`` the final one; in between ``mul_coeff`` is the remaining fraction of
    the pruning window and the value moves from initial to final as its cube."""
    if t <= ti:
        return vi
    if t > T - tf:
        return vf
    mul_coeff = 1 - (t - ti) / (T - ti - tf)
    return vf + (vi - vf) * mul_coeff**3


def slope(s, T, ti, tf, vi, vf):
    """dv/dt inside the pruning window: ``-3 (v_i - v_f) (1 - p)^2 / span``."""
    span = T - ti - tf
    return -3.0 * (vi - vf) * (1.0 - (s - ti) / span) ** 2 / span


def integrated(t, T, ti, tf, vi, vf):
    """Second oracle, from the derivative alone: ``v_i`` plus the integral of the slope from the
    end of warm-up, by Simpson's rule (exact for the quadratic slope, up to rounding)."""
    end = min(max(t, ti), T - tf)
    area = (end - ti) / 6.0 * (slope(ti, T, ti, tf, vi, vf)
                                + 4.0 * slope((ti + end) / 2.0, T, ti, tf, vi, vf)
                                + slope(end, T, ti, tf, vi, vf))
    return vi + area


def printed_eq5(t, T, ti, tf, vi, vf):
    """Eq. (5) as printed in the paper: an extra -t_f in the numerator (erratum 2)."""
    return vf + (vi - vf) * (1 - (t - ti - tf) / (T - ti - tf)) ** 3


def kw(T, ti, tf, vi=1.0, vf=0.1):
    return dict(total_steps=T, warmup_steps=ti, cooldown_steps=tf, initial=vi, final=vf)


schedules = st.integers(1, 300).flatmap(
    lambda T: st.tuples(st.just(T), st.integers(0, T - 1)).flatmap(
        lambda a: st.tuples(st.just(a[0]), st.just(a[1]), st.integers(0, a[0] - a[1] - 1))
    )
)
values = st.tuples(st.floats(0, 1), st.floats(0, 1))


def assert_agrees(reference, T, ti, tf, vi, vf, tol):
    """``cubic_schedule`` equals ``reference`` at every step 0 .. T + 2."""
    for t in range(0, T + 3):
        got = cubic_schedule(t, **kw(T, ti, tf, vi, vf))
        assert got == pytest.approx(reference(t, T, ti, tf, vi, vf), rel=tol[0], abs=tol[1])


@FAST
@given(schedules, values)
def test_matches_code_form_oracle_everywhere(sched, vals):
    assert_agrees(oracle, *sched, max(vals), min(vals), tol=(1e-12, 1e-15))


@FAST
@given(schedules, st.tuples(st.floats(-5, 5), st.floats(-5, 5)))
def test_matches_the_integral_of_its_derivative(sched, vals):
    # either direction: keep_ratio goes down, tau and lambda go up
    assert_agrees(integrated, *sched, *vals, tol=(1e-9, 1e-9))


@FAST
@given(schedules, st.tuples(st.floats(-5, 5), st.floats(-5, 5)))
def test_closed_form_properties(sched, vals):
    T, ti, tf = sched
    vi, vf = vals
    span = T - ti - tf

    def v(t):
        return cubic_schedule(t, **kw(T, ti, tf, vi, vf))

    assert v(ti) == vi  # warm-up end: still the initial value, exactly
    assert v(T - tf) == vf  # cool-down start: the final value, exactly
    seq = [v(t) for t in range(T + 1)]
    steps = [b - a for a, b in zip(seq, seq[1:], strict=False)]
    assert all(d * (vf - vi) >= 0 for d in steps)  # never moves against the target
    # The central difference (h = 1) of a cubic is its derivative plus a sixth of its third
    # derivative, -6 (v_i - v_f) / span^3, and nothing else:
    #     (v(t+1) - v(t-1)) / 2 = v'(t) - (v_i - v_f) / span^3.
    for t in range(ti + 1, T - tf):
        central = (v(t + 1) - v(t - 1)) / 2.0
        want = slope(t, T, ti, tf, vi, vf) - (vi - vf) / span**3
        assert central == pytest.approx(want, rel=1e-9, abs=1e-12 * (1 + abs(vi - vf)))


@FAST
@given(schedules, values)
def test_endpoints_plateaus_and_monotone(sched, vals):
    T, ti, tf = sched
    vi, vf = max(vals), min(vals)
    seq = [cubic_schedule(t, **kw(T, ti, tf, vi, vf)) for t in range(T + 3)]
    assert all(v == vi for v in seq[: ti + 1])  # warm-up plateau, step t_i included
    assert all(v == vf for v in seq[T - tf :])  # reaches v_f at T - t_f and stays
    assert all(a >= b for a, b in zip(seq, seq[1:], strict=False))  # keep_ratio never grows back
    assert all(vf <= v <= vi for v in seq)
    # increasing schedules (tau: 0 -> 0.1) are monotone the other way
    up = [cubic_schedule(t, **kw(T, ti, tf, vf, vi)) for t in range(T + 3)]
    assert all(a <= b for a, b in zip(up, up[1:], strict=False))


def test_concrete_values():
    # T = 10, t_i = 2, t_f = 3: pruning over steps 3..7, p = (t - 2)/5
    got = [cubic_schedule(t, **kw(10, 2, 3, 1.0, 0.1)) for t in range(11)]
    expected = [1.0, 1.0, 1.0] + [0.1 + 0.9 * (1 - p / 5) ** 3 for p in (1, 2, 3, 4, 5)] + [0.1] * 3
    assert got == pytest.approx(expected, rel=1e-15)
    assert got[7] == 0.1  # p = 1 exactly at t = T - t_f


def test_progress_goes_from_zero_to_one():
    T, ti, tf = 20, 4, 5
    seq = [progress(t, total_steps=T, warmup_steps=ti, cooldown_steps=tf) for t in range(T + 1)]
    assert seq[: ti + 1] == [0.0] * (ti + 1) and seq[T - tf :] == [1.0] * (tf + 1)
    for t, p in enumerate(seq):
        assert p == pytest.approx(1 - oracle(t, T, ti, tf, 1.0, 0.0), abs=1e-15)


@pytest.mark.parametrize("T,ti,tf", [(10, 2, 3), (100, 10, 20), (5400 * 10, 5400, 10800)])
def test_printed_eq5_does_not_start_at_initial(T, ti, tf):
    """Erratum 2: with the printed -t_f the curve at t = t_i is above v_i (keep_ratio > 1 here),
    and jumps at the warm-up boundary; the code form starts exactly at v_i."""
    assert cubic_schedule(ti, **kw(T, ti, tf)) == 1.0
    assert printed_eq5(ti, T, ti, tf, 1.0, 0.1) > 1.0
    assert oracle(ti + 1, T, ti, tf, 1.0, 0.1) == pytest.approx(
        cubic_schedule(ti + 1, **kw(T, ti, tf))
    )
    # and the printed form reaches v_f only t_f steps late, i.e. never before cool-down ends
    assert printed_eq5(T - tf, T, ti, tf, 1.0, 0.1) > 0.1


def test_printed_eq5_agrees_without_cooldown():
    T, ti = 50, 5
    for t in range(ti, T + 1):
        assert printed_eq5(t, T, ti, 0, 1.0, 0.1) == pytest.approx(
            cubic_schedule(t, **kw(T, ti, 0)), rel=1e-12
        )


@pytest.mark.parametrize("T,ti,tf", [(10, 5, 5), (10, 10, 0), (10, 0, 10), (3, 2, 2), (0, 0, 0)])
def test_guard_no_pruning_phase(T, ti, tf):
    with pytest.raises(ValueError, match=r"warmup_steps \+ cooldown_steps .* must be smaller"):
        cubic_schedule(0, **kw(T, ti, tf))
    with pytest.raises(ValueError, match="Train longer or shorten the warm-up"):
        check_schedule(total_steps=T, warmup_steps=ti, cooldown_steps=tf)


@pytest.mark.parametrize(
    "bad", [dict(warmup_steps=-1), dict(cooldown_steps=1.5), dict(total_steps=-3)]
)
def test_guard_bad_integers(bad):
    args = dict(total_steps=10, warmup_steps=1, cooldown_steps=1, **{})
    args.update(bad)
    with pytest.raises(ValueError, match="must be a non-negative integer"):
        check_schedule(**args)


def test_pruner_rejects_bad_schedule():
    from torch import nn

    model = nn.Sequential(nn.Linear(3, 3))
    cfg = mplib.PruningConfig(method="magnitude", keep_ratio=0.5, target_modules=["0"])
    with pytest.raises(ValueError, match="warmup_steps \\+ cooldown_steps"):
        mplib.Pruner(model, cfg, total_steps=10, warmup_steps=6, cooldown_steps=4)
    assert not mplib.masked_layers(model)  # the guard fires before any surgery


@FAST
@given(schedules)
def test_pruner_values_follow_the_schedule(sched):
    T, ti, tf = sched
    assume(T <= 60)
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 5))
    cfg = mplib.PruningConfig(method="soft_movement", tau=0.2, lam=3.0, target_modules=["0"])
    pruner = mplib.Pruner(model, cfg, total_steps=T, warmup_steps=ti, cooldown_steps=tf)
    layer = mplib.masked_layers(model)["0"]
    for t in range(T + 1):
        v = pruner.step(t)
        assert v["tau"] == layer.tau
        assert v["tau"] == pytest.approx(oracle(t, T, ti, tf, 0.0, 0.2), abs=1e-15)
        assert v["lam"] == pytest.approx(3.0 * (1 - oracle(t, T, ti, tf, 1.0, 0.0)), abs=1e-14)


# -- contrasts: linear and exponential decay in the same warm-up / cool-down frame ---------------


def linear_by_steps(T, ti, tf, vi, vf):
    """Oracle: start at v_i and add the same increment (v_f - v_i) / span once per pruning step."""
    span, v, out = T - ti - tf, vi, []
    for t in range(T + 3):
        if ti < t <= T - tf:
            v += (vf - vi) / span
        out.append(vf if t > T - tf else v)
    return out


def exponential_by_steps(T, ti, tf, vi, vf):
    """Oracle: start at v_i and multiply by the same factor (v_f / v_i)^(1/span) once per
    pruning step."""
    span, v, out = T - ti - tf, vi, []
    ratio = math.exp(math.log(vf / vi) / span)
    for t in range(T + 3):
        if ti < t <= T - tf:
            v *= ratio
        out.append(vf if t > T - tf else v)
    return out


positive = st.tuples(st.floats(1e-3, 1), st.floats(1e-3, 1))


@FAST
@given(schedules, st.tuples(st.floats(-5, 5), st.floats(-5, 5)))
def test_linear_matches_repeated_addition(sched, vals):
    T, ti, tf = sched
    want = linear_by_steps(T, ti, tf, *vals)
    for t in range(T + 3):
        got = linear_schedule(t, **kw(T, ti, tf, *vals))
        assert got == pytest.approx(want[t], rel=1e-9, abs=1e-9)
    assert linear_schedule(ti, **kw(T, ti, tf, *vals)) == vals[0]
    assert linear_schedule(T - tf, **kw(T, ti, tf, *vals)) == pytest.approx(vals[1], abs=1e-15)


@FAST
@given(schedules, positive)
def test_exponential_matches_repeated_multiplication(sched, vals):
    T, ti, tf = sched
    vi, vf = max(vals), min(vals)
    want = exponential_by_steps(T, ti, tf, vi, vf)
    seq = [exponential_schedule(t, **kw(T, ti, tf, vi, vf)) for t in range(T + 3)]
    for got, w in zip(seq, want, strict=True):
        assert got == pytest.approx(w, rel=1e-9)
    # a constant relative rate: every pruning step keeps the same fraction of what was left
    ratios = [b / a for a, b in zip(seq[ti : T - tf], seq[ti + 1 : T - tf + 1], strict=True)]
    assert all(r == pytest.approx(ratios[0], rel=1e-9) for r in ratios)


def test_three_shapes_share_the_frame_and_differ_inside():
    T, ti, tf = 100, 10, 20
    shapes = (cubic_schedule, linear_schedule, exponential_schedule)
    for f in shapes:
        assert [f(t, **kw(T, ti, tf)) for t in (0, ti)] == [1.0, 1.0]
        assert [f(t, **kw(T, ti, tf)) for t in (T - tf + 1, T)] == [0.1, 0.1]
    mid = ti + (T - ti - tf) // 2  # p = 1/2
    assert cubic_schedule(mid, **kw(T, ti, tf)) == pytest.approx(0.1 + 0.9 / 8)
    assert linear_schedule(mid, **kw(T, ti, tf)) == pytest.approx(0.55)
    assert exponential_schedule(mid, **kw(T, ti, tf)) == pytest.approx(math.sqrt(0.1))


@pytest.mark.parametrize("vi,vf", [(0.0, 0.1), (1.0, 0.0), (-1.0, -0.1), (float("nan"), 0.1)])
def test_exponential_needs_positive_values(vi, vf):
    with pytest.raises(ValueError, match="must both be > 0.*use cubic_schedule or linear"):
        exponential_schedule(5, **kw(10, 1, 1, vi, vf))


def test_contrasts_guard_the_frame():
    for f in (linear_schedule, exponential_schedule):
        with pytest.raises(ValueError, match=r"warmup_steps \+ cooldown_steps"):
            f(0, **kw(10, 5, 5))
