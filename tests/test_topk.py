"""Top_v (paper Eq. 1): exact keep count ceil(v*N) and deterministic ties, against slow oracles."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from _core_helpers import FAST, exact_ceil, oracle_topk_mask
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

import mplib
from mplib.topk import keep_count, topk_mask

# -- keep_count ---------------------------------------------------------------------------------


def test_keep_count_docstring_examples():
    assert keep_count(100, 0.1) == 10  # not 11, although 0.1 * 100 is not exactly 10 in floats
    assert keep_count(10, 0.25) == 3
    assert keep_count(7, 1.0) == 7
    assert keep_count(1, 1e-9) == 1  # v > 0 keeps at least one entry, by the ceil itself
    assert keep_count(3, 0.1 + 0.2) == 1  # 0.30000000000000004 * 3 -> ceil(0.9...) = 1


@FAST
@given(numel=st.integers(1, 5_000_000), p=st.integers(1, 1000), q=st.integers(1, 1000))
def test_keep_count_is_exact_ceil_for_simple_fractions(numel, p, q):
    """keep_ratio = p/q (as the nearest float) keeps exactly ceil(p*N/q) entries."""
    assume(p <= q)
    assert keep_count(numel, p / q) == exact_ceil(Fraction(p, q), numel)


@FAST
@given(digits=st.integers(1, 6), data=st.data())
def test_keep_count_is_exact_ceil_for_short_decimals(digits, data):
    """keep_ratio written with up to 6 decimals (0.999999, 0.123457, ...) on up to 5M entries,
    including sizes where ``v * N`` lies just 10^-6 above an integer."""
    scale = 10**digits
    m = data.draw(st.one_of(st.integers(1, scale), st.integers(scale - 3, scale)))
    numel = data.draw(
        st.one_of(
            st.integers(1, 5_000_000),
            st.integers(1, 5_000_000 // scale).map(lambda c: c * scale - 1),
        )
    )
    text = f"{m / scale:.{digits}f}"
    assert keep_count(numel, float(text)) == exact_ceil(text, numel)


def test_keep_count_near_one_on_a_large_matrix():
    # 0.999999 * 999,999 = 999,998.000001: ceil is 999,999 (a tolerance of 1e-9 relative used to
    # swallow the .000001 and keep one entry too few)
    assert keep_count(999_999, 0.999999) == 999_999
    assert keep_count(2_359_296, 0.9999999) == exact_ceil("0.9999999", 2_359_296)


@FAST
@given(
    numel=st.integers(1, 10**7),
    v=st.floats(min_value=1e-6, max_value=1.0, allow_nan=False, exclude_min=False),
)
def test_keep_count_any_float_is_ceil_up_to_float_noise(numel, v):
    """For an arbitrary float, the result is the exact ceil of the float's own value, except
    that a product within float noise (2^-48 relative, ~16 ulps) above an integer is rounded
    down to it."""
    exact = Fraction(v) * numel
    k = keep_count(numel, v)
    assert 1 <= k <= numel
    assert k in (math.ceil(exact), math.ceil(exact) - 1)
    if k == math.ceil(exact) - 1:
        assert exact - k <= exact * Fraction(1, 2**48)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_keep_count_rejects_bad_ratio(bad):
    with pytest.raises(ValueError, match=r"keep_ratio must be in \(0, 1\]"):
        keep_count(10, bad)


# -- topk_mask ----------------------------------------------------------------------------------

shapes = st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple)


@st.composite
def scores_and_k(draw, integer_valued=None):
    shape = draw(shapes)
    n = math.prod(shape)
    if integer_valued is None:
        integer_valued = draw(st.booleans())
    if integer_valued:  # many ties
        vals = draw(st.lists(st.integers(-2, 2), min_size=n, max_size=n))
        vals = [float(v) for v in vals]
    else:
        vals = draw(
            st.lists(
                st.floats(width=32, allow_nan=False, allow_infinity=True), min_size=n, max_size=n
            )
        )
    k = draw(st.integers(0, n))
    return torch.tensor(vals, dtype=torch.float32).reshape(shape), k


@FAST
@given(scores_and_k())
def test_topk_mask_matches_stable_sort_oracle(case):
    scores, k = case
    m = topk_mask(scores, k)
    assert m.shape == scores.shape and m.dtype == scores.dtype
    assert int(m.sum()) == k
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(m, oracle_topk_mask(scores, k))


@FAST
@given(scores_and_k(integer_valued=True))
def test_topk_mask_ties_go_to_lower_flat_index(case):
    scores, k = case
    flat = topk_mask(scores, k).reshape(-1).tolist()
    values = scores.reshape(-1).tolist()
    for i in range(len(flat)):  # pairwise: a kept entry beats every dropped one
        for j in range(len(flat)):
            if flat[i] == 1 and flat[j] == 0:
                assert values[i] > values[j] or (values[i] == values[j] and i < j)


def test_topk_mask_negative_zero_ties_with_zero():
    s = torch.tensor([0.0, -0.0, -0.0, 0.0, -1.0])
    assert topk_mask(s, 2).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    s = torch.tensor([-0.0, 0.0, -1.0])
    assert topk_mask(s, 1).tolist() == [1.0, 0.0, 0.0]


def test_topk_mask_float64_and_no_grad():
    s = torch.tensor([[0.3, 0.1], [0.3, 0.2]], dtype=torch.float64, requires_grad=True)
    m = topk_mask(s, 2)
    assert m.dtype == torch.float64 and not m.requires_grad
    assert m.tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_topk_mask_rejects_bad_k_and_nan():
    with pytest.raises(ValueError, match=r"k must be in \[0, 4\]"):
        topk_mask(torch.zeros(2, 2), 5)
    with pytest.raises(ValueError, match="k must be in"):
        topk_mask(torch.zeros(2, 2), -1)
    with pytest.raises(ValueError, match="NaN.*learning rate"):
        topk_mask(torch.tensor([1.0, float("nan"), 0.0]), 1)


# -- MaskedLinear.mask for the Top_v methods ----------------------------------------------------


@FAST
@given(
    out_f=st.integers(1, 6),
    in_f=st.integers(1, 6),
    method=st.sampled_from(["magnitude", "movement", "random"]),
    m=st.integers(1, 1000),
    ties=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_masked_linear_mask_is_exact_topv(out_f, in_f, method, m, ties, seed):
    keep_ratio = m / 1000
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    with torch.no_grad():
        w = torch.randn(out_f, in_f, generator=g)
        if ties:
            w = torch.randint(-2, 3, (out_f, in_f), generator=g).float()
        lin.weight.copy_(w)
    layer = mplib.MaskedLinear(
        lin, mplib.PruningConfig(method=method, keep_ratio=keep_ratio, seed=seed), name="layer"
    )
    if method == "movement":
        with torch.no_grad():
            s = (
                torch.randint(-2, 3, w.shape, generator=g).float()
                if ties
                else torch.randn(w.shape, generator=g)
            )
            layer.scores.copy_(s)
    ranking = lin.weight.detach().abs() if method == "magnitude" else layer.scores.detach()
    n = out_f * in_f
    k = exact_ceil(Fraction(m, 1000), n)
    assert layer.kept_count() == k
    mask = layer.mask()
    assert int(mask.sum()) == k
    assert torch.equal(mask, oracle_topk_mask(ranking, k))
    # the forward mask (with its straight-through graph) is the same set
    assert torch.equal(layer.forward_mask().detach(), mask)


def test_random_scores_are_seeded_per_layer_and_leave_global_rng_alone():
    cfg = mplib.PruningConfig(method="random", keep_ratio=0.5, seed=3)
    lin = nn.Linear(5, 4)
    state = torch.get_rng_state()
    a = mplib.MaskedLinear(lin, cfg, name="a")
    assert torch.equal(torch.get_rng_state(), state)  # own generator, not the global one
    a2 = mplib.MaskedLinear(nn.Linear(5, 4), cfg, name="a")
    b = mplib.MaskedLinear(nn.Linear(5, 4), cfg, name="b")
    assert torch.equal(a.scores, a2.scores)
    assert not torch.equal(a.scores, b.scores)
    assert not isinstance(a.scores, nn.Parameter)  # a buffer: random scores are not learned
    assert "scores" in dict(a.named_buffers())
