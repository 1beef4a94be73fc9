"""Global Top_v (paper §7): streaming radix select vs concatenate-and-stable-sort, and the masks
that wrap(scope="global") + Pruner produce."""

from __future__ import annotations

import math

import pytest
import torch
from _core_helpers import FAST, oracle_global
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import mplib
from mplib.global_topk import float_keys, global_budgets, key_to_float, kth_largest

SPECIAL = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    1e-45,
    -1e-45,
    1e-38,
    3e38,
    -3e38,
    float("inf"),
    float("-inf"),
    2.0**-126,
    1.5,
    -1.5,
]


@st.composite
def tensor_lists(draw, dtype=torch.float32):
    n_tensors = draw(st.integers(1, 4))
    tensors = []
    for _ in range(n_tensors):
        shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=2))
        n = math.prod(shape)
        kind = draw(st.sampled_from(["ints", "floats", "special", "close"]))
        if kind == "ints":  # many ties, including 0 and -0
            vals = [float(v) for v in draw(st.lists(st.integers(-2, 2), min_size=n, max_size=n))]
            vals = [-0.0 if v == 0 and draw(st.booleans()) else v for v in vals]
        elif kind == "floats":
            width = 64 if dtype == torch.float64 else 32
            vals = draw(st.lists(st.floats(width=width, allow_nan=False), min_size=n, max_size=n))
        elif kind == "close" and dtype == torch.float64:  # equal in float32, distinct in float64
            vals = draw(
                st.lists(
                    st.sampled_from(
                        [1.0, 1 + 1e-10, 1 + 2e-10, 1 - 1e-12, 1e300, -1e300, 5e-324, -5e-324]
                    ),
                    min_size=n,
                    max_size=n,
                )
            )
        else:
            vals = draw(st.lists(st.sampled_from(SPECIAL), min_size=n, max_size=n))
        tensors.append(torch.tensor(vals, dtype=dtype).reshape(shape))
    return tensors


def _ratio_for(draw_frac: float, total: int) -> float:
    return max(1, math.ceil(draw_frac * total)) / total


@FAST
@given(tensor_lists(), st.floats(0, 1), st.booleans())
def test_kth_largest_matches_sorted_concatenation(tensors, frac, absolute):
    total = sum(t.numel() for t in tensors)
    k = max(1, math.ceil(frac * total))
    expected, _, _ = oracle_global(tensors, k, absolute)
    got = kth_largest(tensors, k, absolute=absolute)
    assert got == expected  # -0.0 == 0.0; infinities compare exactly


@FAST
@given(tensor_lists(), st.floats(0, 1), st.booleans())
def test_global_budgets_match_stable_sort(tensors, frac, absolute):
    total = sum(t.numel() for t in tensors)
    ratio = _ratio_for(frac, total)
    k = mplib.keep_count(total, ratio)
    _, expected, masks = oracle_global(tensors, k, absolute)
    budgets = global_budgets(tensors, ratio, absolute=absolute)
    assert budgets == expected
    assert sum(budgets) == k
    # the per-tensor local Top_k with these budgets is exactly the global selection
    for t, b, m in zip(tensors, budgets, masks, strict=True):
        ranking = t.abs() if absolute else t
        assert torch.equal(mplib.topk_mask(ranking, b), m.to(t.dtype))


@FAST
@given(tensor_lists(dtype=torch.float64), st.floats(0, 1), st.booleans(), st.booleans())
def test_float64_and_mixed_lists_match_stable_sort(tensors, frac, absolute, mixed):
    if mixed:  # float32 next to float64 tensors: compared in float64
        tensors = [t.float() if i % 2 else t for i, t in enumerate(tensors)]
    total = sum(t.numel() for t in tensors)
    ratio = _ratio_for(frac, total)
    k = mplib.keep_count(total, ratio)
    kth, expected, _ = oracle_global(tensors, k, absolute)
    assert kth_largest(tensors, k, absolute=absolute) == kth
    assert global_budgets(tensors, ratio, absolute=absolute) == expected


def test_float64_values_closer_than_float32_resolution():
    # 1 + 1e-10 and 1 + 2e-10 are the same float32; the selection must still tell them apart
    a = torch.tensor([0.5], dtype=torch.float64)
    b = torch.tensor([1 + 1e-10, 1 + 2e-10], dtype=torch.float64)
    assert kth_largest([a, b], 1) == 1 + 2e-10
    assert global_budgets([a, b], 1 / 3) == [0, 1]
    assert global_budgets([b, a], 1 / 3) == [1, 0]
    c = torch.tensor([1 + 2e-10], dtype=torch.float64)
    d = torch.tensor([1 + 1e-10], dtype=torch.float64)
    assert global_budgets([d, c], 0.5) == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores(dtype):
    g = torch.Generator().manual_seed(0)
    tensors = [
        torch.randint(-4, 5, (3, 4), generator=g).to(dtype) / 4,
        torch.randn(5, generator=g).to(dtype),
    ]
    for ratio in (0.1, 0.35, 0.5, 0.8):
        k = mplib.keep_count(17, ratio)
        kth, expected, _ = oracle_global(tensors, k)
        assert global_budgets(tensors, ratio) == expected
        assert kth_largest(tensors, k) == kth


def test_float_keys_are_order_preserving_and_invertible():
    vals = sorted(set(SPECIAL + [2.5, -2.5, 1e-30, -1e-30, 7.0, 1e20]))
    x = torch.tensor(vals, dtype=torch.float32)
    keys = float_keys(x).tolist()
    for (va, ka), (vb, kb) in zip(
        zip(vals, keys, strict=True), zip(vals[1:], keys[1:], strict=True), strict=False
    ):
        assert (va < vb) == (ka < kb) and (va == vb) == (ka == kb)
    for v, key in zip(x.tolist(), keys, strict=True):
        assert key_to_float(key) == v
    assert float_keys(torch.tensor([-0.0])).item() == float_keys(torch.tensor([0.0])).item()


def test_large_input_streams_over_chunks():
    g = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(300, 200, generator=g),
        torch.randint(-3, 3, (50_000,), generator=g).float(),
        torch.randn(7, generator=g),
    ]
    total = sum(t.numel() for t in tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors])
    for ratio in (0.03, 0.5, 0.97):
        k = mplib.keep_count(total, ratio)
        kth = float(torch.sort(flat, descending=True).values[k - 1])
        assert kth_largest(tensors, k) == kth
        budgets = global_budgets(tensors, ratio)
        assert sum(budgets) == k
        greater = [int((t > kth).sum()) for t in tensors]
        assert all(b >= gr for b, gr in zip(budgets, greater, strict=True))


def test_budgets_keep_everything_at_ratio_one_and_errors():
    ts = [torch.zeros(2, 2), torch.ones(3)]
    assert global_budgets(ts, 1.0) == [4, 3]
    with pytest.raises(ValueError, match=r"k must be in \[1, 7\]"):
        kth_largest(ts, 0)
    with pytest.raises(ValueError, match="NaN.*learning rates"):
        global_budgets([torch.tensor([1.0, float("nan")]), torch.ones(2)], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        kth_largest([torch.tensor([float("nan")])], 1)


# -- through wrap + Pruner ----------------------------------------------------------------------


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))


def _assert_global_masks(model, ratio, absolute):
    layers = list(mplib.masked_layers(model).values())
    tensors = [(lay.weight if absolute else lay.scores).detach() for lay in layers]
    total = sum(t.numel() for t in tensors)
    _, budgets, masks = oracle_global(tensors, mplib.keep_count(total, ratio), absolute)
    assert [lay.budget for lay in layers] == budgets
    for lay, m in zip(layers, masks, strict=True):
        assert torch.equal(lay.mask(), m)
        assert torch.equal(lay.forward_mask().detach(), m)
    return budgets


@pytest.mark.parametrize(
    "method", ["magnitude", "movement", "random", "accumulated_movement", "snip"]
)
def test_wrap_global_gives_reference_masks(method):
    model = _mlp()
    cfg = mplib.PruningConfig(
        method=method,
        keep_ratio=0.3,
        scope="global",
        target_modules=["0", "2", "4"],
        score_init="uniform",
        score_init_value=1.0,
    )
    mplib.wrap(model, cfg)
    if method in ("accumulated_movement", "snip"):  # scores start at 0: give them a ranking
        g = torch.Generator().manual_seed(1)
        for lay in mplib.masked_layers(model).values():
            lay.scores.copy_(torch.randint(-3, 4, lay.scores.shape, generator=g).float())
        mplib.global_topk.assign_global_budgets(list(mplib.masked_layers(model).values()), 0.3)
    budgets = _assert_global_masks(model, 0.3, absolute=method == "magnitude")
    sizes = [60, 80, 24]
    assert sum(budgets) == mplib.keep_count(sum(sizes), 0.3)
    if method in ("magnitude", "movement", "random"):
        # different sparsities per layer (that is the point of global selection)
        assert len({b / n for b, n in zip(budgets, sizes, strict=True)}) > 1
    assert mplib.remaining_fraction(model) == sum(budgets) / sum(sizes)


def test_magnitude_global_ranks_absolute_weights():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[-5.0, 1.0], [0.5, -0.1]]))
        model[1].weight.copy_(torch.tensor([[4.0, -3.0], [0.2, 2.0]]))
    cfg = mplib.PruningConfig(
        method="magnitude", keep_ratio=0.5, scope="global", target_modules=["0", "1"]
    )
    mplib.wrap(model, cfg)
    layers = mplib.masked_layers(model)
    assert layers["0"].mask().tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert layers["1"].mask().tolist() == [[1.0, 1.0], [0.0, 1.0]]


@pytest.mark.parametrize("method", ["movement", "magnitude"])
def test_pruner_global_steps_keep_reference_masks(method):
    model = _mlp(1)
    cfg = mplib.PruningConfig(
        method=method,
        keep_ratio=0.2,
        scope="global",
        target_modules=["0", "2", "4"],
        score_init="uniform",
        score_init_value=0.01,
    )
    total = 6
    pruner = mplib.Pruner(model, cfg, total_steps=total, warmup_steps=1, cooldown_steps=1)
    opt = torch.optim.SGD(mplib.param_groups(model, lr=0.1, score_lr=0.5), lr=0.1)
    g = torch.Generator().manual_seed(2)
    seen = []
    for step in range(total):
        v = pruner.step(step)
        _assert_global_masks(model, v["keep_ratio"], absolute=method == "magnitude")
        seen.append(v["keep_ratio"])
        x = torch.randn(16, 6, generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    v = pruner.step(total)
    assert v["keep_ratio"] == 0.2
    _assert_global_masks(model, 0.2, absolute=method == "magnitude")
    assert seen[0] == 1.0 and seen[-1] == 0.2 and len(set(seen)) > 2


def test_global_every_recomputes_budgets_only_every_n_steps():
    model = _mlp(2)
    cfg = mplib.PruningConfig(
        method="movement",
        keep_ratio=0.25,
        scope="global",
        target_modules=["0", "2", "4"],
        score_init="uniform",
        score_init_value=1.0,
        global_every=3,
        initial_keep_ratio=0.25,
    )
    pruner = mplib.Pruner(model, cfg, total_steps=10)
    layers = list(mplib.masked_layers(model).values())
    before = [lay.budget for lay in layers]
    with torch.no_grad():  # the largest scores all move into the first layer
        layers[0].scores.add_(10.0)
    pruner.step(1)
    assert [lay.budget for lay in layers] == before  # stale until step 3
    pruner.step(3)
    assert layers[0].budget == min(60, mplib.keep_count(164, 0.25))
    _assert_global_masks(model, 0.25, absolute=False)
