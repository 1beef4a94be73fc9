"""One row per pruning method: the contract facts of each, checked on tiny models against
oracles written here (plain loops and torch ops, never mplib's own helpers).

Adding a method to ``mplib.METHODS`` without a row in ``ROWS`` fails
``test_every_registered_method_has_a_row``; the last test shows that a new method class plus
one registry entry is all ``PruningConfig``, ``wrap`` and ``Pruner`` need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from _core_helpers import MLP_TARGETS, exact_ceil, make_model, oracle_global, oracle_topk_mask
from torch import nn

import mplib
import mplib.config
import mplib.distributed
import mplib.methods
from mplib.methods.base import PruningMethod, TopV


@dataclass(frozen=True)
class Row:
    knobs: tuple[str, ...]
    scores: str  # "none" | "parameter" | "buffer"
    ddp: str  # "exact" | "average_buffers" | "refuse"
    lam_schedule: str  # the default of PruningConfig.lam_schedule for this method
    score_init: float  # default_score_init
    topv: bool  # M = Top_v(ranking)
    ranks: str | None  # what Top_v ranks: "abs_weight" | "scores"; None if not Top_v
    eval_mask: str | None  # non-Top_v eval mask: "S>tau" | "sigmoid(S)>tau" | "S>0"
    penalty: str | None  # "mean_sigmoid" | "mean_prob_nonzero" | None
    accumulates: str | None  # "minus_w_grad" | "plus_abs_w_grad" | None
    config: dict = field(default_factory=dict)  # a valid config with non-trivial masks
    groups: str | None = None  # one score per "block" | "neuron" | "head"; None: per weight


L0_DEFAULT_INIT = math.log(0.9 / 0.1)  # logit(0.9): gates start about 90 % open

ROWS: dict[str, Row] = {
    "magnitude": Row(("keep_ratio",), "none", "exact", "cubic", 0.0, True, "abs_weight",
                     None, None, None, dict(keep_ratio=0.5)),
    "movement": Row(("keep_ratio",), "parameter", "exact", "cubic", 0.0, True, "scores",
                    None, None, None, dict(keep_ratio=0.5)),
    "soft_movement": Row(("tau", "lam"), "parameter", "exact", "cubic", 0.0, False, None,
                         "sigmoid(S)>tau", "mean_sigmoid", None, dict(tau=0.4, lam=2.0)),
    "l0": Row(("lam",), "parameter", "exact", "constant", L0_DEFAULT_INIT, False, None,
              "S>0", "mean_prob_nonzero", None, dict(lam=3.0)),
    "threshold": Row(("tau",), "parameter", "exact", "cubic", 0.0, False, None,
                     "S>tau", None, None, dict(tau=0.1)),
    "random": Row(("keep_ratio",), "buffer", "exact", "cubic", 0.0, True, "scores",
                  None, None, None, dict(keep_ratio=0.5)),
    "accumulated_movement": Row(("keep_ratio",), "buffer", "average_buffers", "cubic", 0.0,
                                True, "scores", None, None, "minus_w_grad",
                                dict(keep_ratio=0.5)),
    "snip": Row(("keep_ratio",), "buffer", "refuse", "cubic", 0.0, True, "scores",
                None, None, "plus_abs_w_grad", dict(keep_ratio=0.5)),
    "block_movement": Row(("keep_ratio",), "parameter", "exact", "cubic", 0.0, True, "scores",
                          None, None, None, dict(keep_ratio=0.5, block_size=4), "block"),
    "neuron_movement": Row(("keep_ratio",), "parameter", "exact", "cubic", 0.0, True, "scores",
                           None, None, None, dict(keep_ratio=0.5), "neuron"),
    "head_movement": Row(("keep_ratio",), "parameter", "exact", "cubic", 0.0, True, "scores",
                         None, None, None, dict(keep_ratio=0.5, head_size=4), "head"),
}
NAMES = sorted(ROWS)
TOPV = [n for n in NAMES if ROWS[n].topv]
TOPV_PER_WEIGHT = [n for n in TOPV if ROWS[n].groups is None]
COARSE = [n for n in NAMES if ROWS[n].groups]
PENALISED = [n for n in NAMES if ROWS[n].penalty]
ACCUMULATING = [n for n in NAMES if ROWS[n].accumulates]
KEEP_RATIOS = ("1", "0.5", "0.3", "0.1", "0.07", "0.001")  # decimal strings: exact oracle


# -- independent oracles -----------------------------------------------------------------------
ATTN_IN = ("attention.self.query", "attention.self.key", "attention.self.value",
           "attention.q_lin", "attention.k_lin", "attention.v_lin")
READS_GROUPS = ("attention.output.dense", "attention.out_lin", "ffn.lin2")


def oracle_group(name: str, lname: str, shape: tuple[int, int], cfg) -> tuple[int, int]:
    """The ``(r, c)`` group of stored weight ``shape`` (nn.Linear layers): (1, 1) per weight."""
    out, inp = shape
    groups = ROWS[name].groups
    if groups is None:
        return 1, 1
    if groups == "block":
        return tuple(cfg.block_size)
    if groups == "head" and lname.endswith(ATTN_IN):
        return cfg.head_size, inp
    if groups == "head" and lname.endswith(("attention.output.dense", "attention.out_lin")):
        return out, cfg.head_size
    # neurons: columns of the layers that read neurons/heads (FFN out, attention out), else rows
    ffn_out = lname.endswith("output.dense") and not lname.endswith("attention.output.dense")
    return (out, 1) if ffn_out or lname.endswith(READS_GROUPS) else (1, inp)


def oracle_expand(grid: torch.Tensor, r: int, c: int) -> torch.Tensor:
    """``E``: entry ``(i, j)`` of the result is ``grid[i // r][j // c]`` (plain loops)."""
    g = grid.tolist()
    rows = [[g[i // r][j // c] for j in range(len(g[0]) * c)] for i in range(len(g) * r)]
    return torch.tensor(rows, dtype=grid.dtype)


def schedule_oracle(t: int, T: int, warmup: int, cooldown: int, start: float, end: float):
    """Clamped elapsed fraction through the pruning window, then the cubic ease-out."""
    elapsed = min(max((t - warmup) / (T - warmup - cooldown), 0.0), 1.0)
    return end + (start - end) * (1.0 - elapsed) ** 3


def py_sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def indicator(scores: torch.Tensor, keep) -> torch.Tensor:
    """``[[1 if keep(s) else 0 ...]]`` over the entries of ``scores``, in plain Python."""
    rows = [[1.0 if keep(s) else 0.0 for s in row] for row in scores.detach().tolist()]
    return torch.tensor(rows, dtype=scores.dtype)


def penalty_by_hand(kind: str, scores: list[torch.Tensor], cfg) -> float:
    """``R(S)``: each matrix's mean, then the mean over matrices, with Python floats."""
    if kind == "mean_sigmoid":
        def f(s):
            return py_sigmoid(s)
    else:  # P(hard-concrete gate > 0) = sigmoid(S - beta * log(-l / r))
        shift = cfg.l0_beta * math.log(-cfg.l0_left / cfg.l0_right)

        def f(s):
            return py_sigmoid(s - shift)
    per_matrix = []
    for s in scores:
        flat = s.detach().reshape(-1).tolist()
        per_matrix.append(sum(f(v) for v in flat) / len(flat))
    return sum(per_matrix) / len(per_matrix)


def penalty_torch(kind: str, scores: list[torch.Tensor], cfg) -> torch.Tensor:
    """The same ``R(S)`` with torch ops (for autograd), written independently of mplib."""
    shift = 0.0 if kind == "mean_sigmoid" else cfg.l0_beta * math.log(-cfg.l0_left / cfg.l0_right)
    means = [(1.0 / (1.0 + torch.exp(-(s - shift)))).mean() for s in scores]
    return sum(means) / len(means)


# -- building ----------------------------------------------------------------------------------
def config(name: str, **extra) -> mplib.PruningConfig:
    kw = {**ROWS[name].config, **extra}
    kw.setdefault("target_modules", MLP_TARGETS)
    return mplib.PruningConfig(method=name, **kw)


def wrapped_mlp(name: str, *, dtype=torch.float32, **extra):
    model = make_model("mlp").to(dtype)
    mplib.wrap(model, config(name, **extra))
    return model, mplib.masked_layers(model)


def randomise_scores(layers, seed: int = 3) -> None:
    """Distinct scores in about (-3, 3), so masks are neither all-ones nor all-zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers.values():
            if layer.scores is not None:
                layer.scores.copy_(torch.randn(layer.scores.shape, generator=g) * 1.5)


def mlp_input(dtype=torch.float32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 8, generator=g).to(dtype), torch.randint(0, 3, (5,), generator=g)


# -- (a) the table covers the registry ---------------------------------------------------------
def test_every_registered_method_has_a_row():
    assert set(ROWS) == set(mplib.METHODS)
    for name, cls in mplib.METHODS.items():
        assert cls.name == name


@pytest.mark.parametrize("name", NAMES)
def test_contract_attributes(name):
    row, cls = ROWS[name], mplib.METHODS[name]
    assert issubclass(cls, PruningMethod)
    assert cls.knobs == row.knobs
    assert cls.scores == row.scores
    assert cls.ddp == row.ddp
    assert cls.lam_schedule == row.lam_schedule
    assert cls.default_score_init == pytest.approx(row.score_init, abs=1e-12)
    assert cls.accumulates == (row.accumulates is not None)
    assert issubclass(cls, TopV) == row.topv
    assert cls.chapter, f"{name}: chapter must name a book file or a planned chapter"
    cfg = config(name)
    assert cfg.method_class is cls
    assert cfg.lam_schedule == row.lam_schedule
    assert cfg.score_init_value == pytest.approx(row.score_init, abs=1e-12)
    assert cfg.has_scores == (row.scores != "none")
    assert cfg.learned_scores == (row.scores == "parameter")


# -- (b) scores, masks, counts -----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_score_tensor_kind_shape_and_start(name):
    row = ROWS[name]
    model, layers = wrapped_mlp(name)
    params = {id(p) for p in model.parameters()}
    buffers = {id(b) for b in model.buffers()}
    assert set(layers) == set(MLP_TARGETS)
    for lname, layer in layers.items():
        s = layer.scores
        if row.scores == "none":
            assert s is None
            continue
        r, c = oracle_group(name, lname, tuple(layer.weight.shape), layer.rule.config)
        rows, cols = layer.weight.shape
        assert s.shape == (rows // r, cols // c) and s.dtype == layer.weight.dtype
        if row.scores == "parameter":
            assert isinstance(s, nn.Parameter) and s.requires_grad and id(s) in params
            assert torch.all(s == row.score_init)  # constant init at the method's default
        else:
            assert not isinstance(s, nn.Parameter) and not s.requires_grad
            assert id(s) in buffers and id(s) not in params
        if row.accumulates:
            assert torch.all(s == 0)
        if name == "random":  # U(0, 1), fixed by (seed, layer name), different per layer
            assert float(s.min()) >= 0.0 and float(s.max()) < 1.0
            again = wrapped_mlp(name)[1][lname].scores
            assert torch.equal(s, again)
            other_seed = wrapped_mlp(name, seed=1)[1][lname].scores
            assert not torch.equal(s, other_seed)
    if name == "random":
        a, b = (layers[n].scores.reshape(-1)[:50] for n in MLP_TARGETS)
        assert not torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_mask_is_binary_and_is_the_eval_forward_mask(name):
    model, layers = wrapped_mlp(name, dtype=torch.float64)
    randomise_scores(layers)
    x, _ = mlp_input(torch.float64)
    model.eval()
    for layer in layers.values():
        m = layer.mask()
        assert m.dtype == layer.weight.dtype and m.shape == layer.weight.shape
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert 0 < int(m.sum()) < m.numel(), "the case should prune something and keep something"
        assert not m.requires_grad
        assert torch.equal(layer.forward_mask().detach(), m)
    # the eval forward pass is exactly W * mask() applied by plain code
    with torch.no_grad():
        h = x
        for i, module in enumerate(model):
            if str(i) in layers:
                lay = layers[str(i)]
                h = F.linear(h, lay.weight * lay.mask(), lay.bias)
            else:
                h = module(h)
        assert torch.equal(model(x), h)
    model.train()
    for layer in layers.values():
        fm = layer.forward_mask().detach()
        if name == "l0":  # training: one hard-concrete sample in [0, 1], not the binary gate
            assert float(fm.min()) >= 0.0 and float(fm.max()) <= 1.0
            assert bool(((fm > 0) & (fm < 1)).any())
        else:
            assert torch.equal(fm, layer.mask())


@pytest.mark.parametrize("name", TOPV)
@pytest.mark.parametrize("ratio", KEEP_RATIOS)
def test_topv_local_keeps_ceil_v_n_of_the_ranking(name, ratio):
    model, layers = wrapped_mlp(name, keep_ratio=float(ratio))
    randomise_scores(layers)
    for lname, layer in layers.items():
        m = layer.mask()
        ranking = layer.weight.abs() if ROWS[name].ranks == "abs_weight" else layer.scores
        n = ranking.numel()  # weights, or groups for the structured methods
        r, c = oracle_group(name, lname, tuple(layer.weight.shape), layer.rule.config)
        assert int(m.sum()) == exact_ceil(ratio, n) * r * c
        want = oracle_expand(oracle_topk_mask(ranking, exact_ceil(ratio, n)), r, c)
        assert torch.equal(m, want)


@pytest.mark.parametrize("name", TOPV_PER_WEIGHT)
@pytest.mark.parametrize("ratio", ("0.5", "0.2", "0.05"))
@pytest.mark.parametrize("family", ("mlp", "bert"))
def test_topv_global_keeps_ceil_v_n_over_all_matrices(name, ratio, family):
    model = make_model(family)
    extra = {"target_modules": MLP_TARGETS} if family == "mlp" else {}
    cfg = mplib.PruningConfig(method=name, keep_ratio=float(ratio), scope="global", **extra)
    T = 6
    pruner = mplib.Pruner(model, cfg, total_steps=T, warmup_steps=1, cooldown_steps=2)
    layers = mplib.masked_layers(model)
    randomise_scores(layers)
    pruner.step(T - 2)  # first cool-down step: keep_ratio_t is the final ratio, budgets redone
    assert pruner.state["keep_ratio"] == float(ratio)
    absolute = ROWS[name].ranks == "abs_weight"
    ranked = [lay.weight if absolute else lay.scores for lay in layers.values()]
    total = sum(t.numel() for t in ranked)
    k = exact_ceil(ratio, total)
    _, budgets, masks = oracle_global(ranked, k, absolute=absolute)
    assert sum(int(lay.mask().sum()) for lay in layers.values()) == k
    for lay, budget, want in zip(layers.values(), budgets, masks, strict=True):
        assert lay.budget == budget
        assert torch.equal(lay.mask(), want.to(lay.weight.dtype))


@pytest.mark.parametrize("tau", (-1.0, 0.0, 0.1, 0.75))
def test_threshold_mask_is_scores_above_tau(tau):
    model, layers = wrapped_mlp("threshold", dtype=torch.float64, tau=tau)
    randomise_scores(layers)
    with torch.no_grad():
        layers["0"].scores[0, :3] = tau  # exactly at tau: pruned (strict inequality)
    model.eval()
    for layer in layers.values():
        want = indicator(layer.scores, lambda s, t=tau: s > t)
        assert torch.equal(layer.mask(), want)
        assert torch.equal(layer.forward_mask().detach(), want)
    assert layers["0"].mask()[0, :3].sum() == 0


@pytest.mark.parametrize("step", (0, 2, 4, 7, 10))
def test_soft_movement_mask_is_sigmoid_scores_above_scheduled_tau(step):
    T, wu, cd, tau = 10, 2, 3, 0.4
    model, layers = wrapped_mlp("soft_movement", dtype=torch.float64, tau=tau)
    pruner = mplib.Pruner(model, config("soft_movement", tau=tau), total_steps=T,
                          warmup_steps=wu, cooldown_steps=cd)
    randomise_scores(layers)
    pruner.step(step)
    tau_t = schedule_oracle(step, T, wu, cd, 0.0, tau)
    for layer in layers.values():
        assert layer.tau == pytest.approx(tau_t, abs=1e-15)
        sig = [py_sigmoid(s) for s in layer.scores.detach().reshape(-1).tolist()]
        assert min(abs(v - tau_t) for v in sig) > 1e-9  # no entry on the knife edge
        want = indicator(layer.scores, lambda s, t=tau_t: py_sigmoid(s) > t)
        assert torch.equal(layer.mask(), want)


def test_l0_eval_mask_is_the_binary_gate():
    model, layers = wrapped_mlp("l0", dtype=torch.float64)
    randomise_scores(layers)
    with torch.no_grad():
        layers["0"].scores[0, :2] = 0.0  # a gate whose noise-free value is exactly 1/2: closed
    model.eval()
    for layer in layers.values():
        # Louizos' deterministic gate min(1, max(0, (r - l) sigmoid(S) + l)) rounded at 1/2
        want = indicator(layer.scores,
                         lambda s: min(1.0, max(0.0, 1.2 * py_sigmoid(s) - 0.1)) > 0.5)
        assert torch.equal(layer.mask(), want)
        assert torch.equal(layer.forward_mask(), want)


# -- schedule and penalty ----------------------------------------------------------------------
def expected_values(name: str, cfg, t: int, T: int, wu: int, cd: int) -> dict:
    """What the schedule sets at step ``t``, per knob, from the config and the clamped cubic."""
    out = {"step": t}
    if "keep_ratio" in cfg.method_class.knobs:
        out["keep_ratio"] = schedule_oracle(t, T, wu, cd, cfg.initial_keep_ratio, cfg.keep_ratio)
    if "tau" in cfg.method_class.knobs:
        # soft movement anneals tau from initial_tau; threshold keeps its fixed tau
        out["tau"] = (schedule_oracle(t, T, wu, cd, cfg.initial_tau, cfg.tau)
                      if name == "soft_movement" else cfg.tau)
    if "lam" in cfg.method_class.knobs:
        out["lam"] = (cfg.lam if cfg.lam_schedule == "constant"
                      else cfg.lam * schedule_oracle(t, T, wu, cd, 0.0, 1.0))
    return out


LAM_VARIANTS = [(n, None) for n in NAMES] + [("soft_movement", "constant"), ("l0", "cubic")]


@pytest.mark.parametrize("name,lam_schedule", LAM_VARIANTS)
def test_values_at_has_the_knobs_keys_and_follows_the_schedule(name, lam_schedule):
    T, wu, cd = 13, 3, 4
    extra = {"lam_schedule": lam_schedule} if lam_schedule else {}
    cfg = config(name, **extra)
    model = make_model("mlp")
    pruner = mplib.Pruner(model, cfg, total_steps=T, warmup_steps=wu, cooldown_steps=cd)
    layers = mplib.masked_layers(model)
    for t in range(T + 2):
        values = pruner.values_at(t)
        assert set(values) == {"step", *ROWS[name].knobs}
        want = expected_values(name, cfg, t, T, wu, cd)
        assert values == pytest.approx(want, abs=1e-14)
        applied = pruner.step(t)
        assert applied == values
        for layer in layers.values():
            for key in ("keep_ratio", "tau"):
                if key in values:
                    assert getattr(layer, key) == values[key]


@pytest.mark.parametrize("name", NAMES)
def test_penalty_is_lam_t_times_r_of_scores(name):
    row = ROWS[name]
    T, wu, cd = 12, 2, 3
    extra = dict(l0_left=-0.2, l0_right=1.3, l0_beta=0.5) if name == "l0" else {}
    cfg = config(name, **extra)
    model = make_model("mlp").double()
    pruner = mplib.Pruner(model, cfg, total_steps=T, warmup_steps=wu, cooldown_steps=cd)
    layers = list(mplib.masked_layers(model).values())
    randomise_scores(mplib.masked_layers(model))
    for t in (0, wu, wu + 1, 6, T - cd, T):
        pruner.step(t)
        got = pruner.penalty()
        assert got.ndim == 0
        if row.penalty is None:
            assert float(got) == 0.0 and not got.requires_grad
            continue
        lam_t = expected_values(name, cfg, t, T, wu, cd)["lam"]
        scores = [lay.scores for lay in layers]
        want = lam_t * penalty_by_hand(row.penalty, scores, cfg)
        assert float(got.detach()) == pytest.approx(want, rel=1e-12, abs=1e-15)
        if lam_t == 0:
            continue
        grads = torch.autograd.grad(got, scores)
        want = torch.autograd.grad(lam_t * penalty_torch(row.penalty, scores, cfg), scores)
        for g, w in zip(grads, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-15)


# l0 trains through a sampled gate, not through mask(): its gradients are in test_hard_concrete
@pytest.mark.parametrize("name", [n for n in NAMES if n != "l0"])
def test_after_one_backward_buffers_hold_the_independent_update(name):
    row = ROWS[name]
    model, layers = wrapped_mlp(name, dtype=torch.float64)
    randomise_scores(layers)
    before = {n: None if lay.scores is None else lay.scores.detach().clone()
              for n, lay in layers.items()}
    masks = {n: lay.mask() for n, lay in layers.items()}
    x, y = mlp_input(torch.float64)
    model.train()
    F.cross_entropy(model(x), y).backward()

    # oracle: the same network with W' = W * M as leaves, so autograd gives G = dL/dW'
    leaves = {n: (lay.weight.detach() * masks[n]).requires_grad_() for n, lay in layers.items()}
    h = x
    for i, module in enumerate(model):
        if str(i) in layers:
            h = F.linear(h, leaves[str(i)], layers[str(i)].bias.detach())
        else:
            h = module(h)
    F.cross_entropy(h, y).backward()
    for n, lay in layers.items():
        grad_w = leaves[n].grad * masks[n]
        torch.testing.assert_close(lay.weight.grad, grad_w, rtol=1e-12, atol=1e-14)
        if row.scores != "buffer":
            continue
        w = lay.weight.detach()
        if row.accumulates == "minus_w_grad":
            want = before[n] - w * grad_w
        elif row.accumulates == "plus_abs_w_grad":
            want = before[n] + (w * grad_w).abs()
        else:  # a fixed buffer: untouched
            want = before[n]
        torch.testing.assert_close(lay.scores, want, rtol=1e-12, atol=1e-14)
        pruned = masks[n] == 0
        assert torch.equal(lay.scores[pruned], before[n][pruned])  # no gradient, no change
        if row.accumulates:
            assert not torch.equal(lay.scores, before[n])


@pytest.mark.parametrize("name", ACCUMULATING)
def test_no_accumulation_outside_a_training_backward(name):
    model, layers = wrapped_mlp(name)
    randomise_scores(layers)
    before = {n: lay.scores.clone() for n, lay in layers.items()}
    x, y = mlp_input()
    model.eval()
    F.cross_entropy(model(x), y).backward()  # eval mode: evaluation forward, no hook
    model.train()
    with torch.no_grad():
        model(x)
    for n, lay in layers.items():
        assert torch.equal(lay.scores, before[n])


@pytest.mark.parametrize("name", NAMES)
def test_ddp_refuses_exactly_the_refuse_methods(name, monkeypatch):
    mplib.distributed.check_supported(name)  # one process: everything runs
    monkeypatch.setattr(mplib.distributed, "world_size", lambda: 2)
    if ROWS[name].ddp == "refuse":
        with pytest.raises(ValueError, match="not linear in the gradient.*one process"):
            mplib.distributed.check_supported(name)
    else:
        mplib.distributed.check_supported(name)


# -- structured methods: one score per block / neuron / head --------------------------------------
GPT2_GROUPS = {"attn.c_attn": "in_head", "attn.c_proj": "head_in", "mlp.c_fc": "col",
               "mlp.c_proj": "row"}


def stored_group(name: str, lname: str, shape: tuple[int, int], cfg) -> tuple[int, int]:
    """``oracle_group`` in the stored orientation: GPT-2's Conv1D weights are ``(in, out)``."""
    suffix = next((k for k in GPT2_GROUPS if lname.endswith(k)), None)
    if suffix is None or ROWS[name].groups == "block":
        return oracle_group(name, lname, shape, cfg)
    rows, cols = shape
    kind = GPT2_GROUPS[suffix]
    if kind == "in_head" and ROWS[name].groups == "head":
        return rows, cfg.head_size
    if kind == "head_in" and ROWS[name].groups == "head":
        return cfg.head_size, cols
    # neurons: c_fc / fused c_attn produce outputs (stored columns); the two c_proj read them
    return (1, cols) if kind in ("row", "head_in") else (rows, 1)


FAMILY_OPTIONS = {"block_movement": dict(block_size=4), "neuron_movement": {},
                  "head_movement": dict(head_size=8)}


@pytest.mark.parametrize("name", COARSE)
@pytest.mark.parametrize("family", ("mlp", "bert", "distilbert", "gpt2"))
def test_coarse_gradient_is_autograd_of_an_explicit_expansion(name, family):
    """dL/dS_g = sum over group g of (dL/dW') ⊙ W: the gradient of a leaf grid mask ``Mg`` when
    ``W' = W ⊙ kron(Mg, ones(r, c))`` is computed by plain autograd on an unwrapped twin."""
    extra = {"target_modules": MLP_TARGETS} if family == "mlp" else {}
    cfg = mplib.PruningConfig(method=name, keep_ratio=0.5, **FAMILY_OPTIONS[name], **extra)
    model = make_model(family).double()
    mplib.wrap(model, cfg)
    layers = mplib.masked_layers(model)
    randomise_scores(layers, seed=5)
    g = torch.Generator().manual_seed(2)
    if family == "mlp":
        x = torch.randn(4, 8, generator=g, dtype=torch.float64)
        loss_of = lambda out: (out**2).sum()  # noqa: E731
        inputs = (x,)
    else:
        ids = torch.randint(0, 40, (2, 6), generator=g)
        inputs = ()
        loss_of = lambda out: (out.logits**2).sum()  # noqa: E731
    kwargs = {} if family == "mlp" else {"input_ids": ids}
    loss_of(model(*inputs, **kwargs)).backward()

    twin = make_model(family).double()  # same seed: the same weights, no mplib layers
    params, leaves, groups = {}, {}, {}
    for lname, layer in layers.items():
        shape = tuple(layer.weight.shape)
        r, c = stored_group(name, lname, shape, cfg)
        groups[lname] = (r, c)
        k = exact_ceil("0.5", (shape[0] // r) * (shape[1] // c))
        leaves[lname] = oracle_topk_mask(layer.scores, k).requires_grad_()
        w = twin.get_submodule(lname).weight.detach()
        params[lname + ".weight"] = w * torch.kron(leaves[lname], torch.ones(r, c, dtype=w.dtype))
    loss_of(torch.func.functional_call(twin, params, inputs, kwargs)).backward()
    assert any(float(leaf.grad.abs().max()) > 0 for leaf in leaves.values())
    for lname, layer in layers.items():
        assert tuple(layer.scores.shape) == tuple(leaves[lname].shape)
        torch.testing.assert_close(layer.scores.grad, leaves[lname].grad, rtol=1e-10,
                                   atol=1e-12)
        r, c = groups[lname]
        assert torch.equal(layer.mask(), oracle_expand(leaves[lname].detach(), r, c))


def test_coarse_gradient_is_the_group_sum_of_grad_times_weight():
    """The formula by hand on the MLP: G = dL/dW' from W' leaves, then loops over each block."""
    model, layers = wrapped_mlp("block_movement", dtype=torch.float64)
    randomise_scores(layers)
    x, y = mlp_input(torch.float64)
    F.cross_entropy(model(x), y).backward()
    leaves = {n: (lay.weight.detach() * lay.mask()).requires_grad_() for n, lay in layers.items()}
    h = x
    for i, module in enumerate(model):
        h = F.linear(h, leaves[str(i)], module.bias.detach()) if str(i) in layers else module(h)
    F.cross_entropy(h, y).backward()
    for n, lay in layers.items():
        G, W = leaves[n].grad.tolist(), lay.weight.detach().tolist()
        g0, g1 = lay.scores.shape
        want = [[sum(G[i][j] * W[i][j] for i in range(4 * a, 4 * a + 4)
                     for j in range(4 * b, 4 * b + 4)) for b in range(g1)] for a in range(g0)]
        torch.testing.assert_close(lay.scores.grad, torch.tensor(want, dtype=torch.float64),
                                   rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", COARSE)
def test_coarse_methods_refuse_global_scope(name):
    with pytest.raises(ValueError, match="only scope='local'.*use scope='local'"):
        config(name, scope="global")


@pytest.mark.parametrize("block_size", (3, (4, 3), (5, 4)))
def test_block_size_that_does_not_divide_names_the_fix(block_size):
    model = make_model("mlp")  # weights (16, 8) and (12, 16)
    with pytest.raises(ValueError, match=r"does not divide\. Pass a block_size that divides "
                                         r"every selected weight \(e\.g\. block_size=8 for "
                                         r"this one\).*exclude_modules"):
        mplib.wrap(model, config("block_movement", block_size=block_size))


@pytest.mark.parametrize("bad", (0, -4, (4,), (4, 0), 2.5, "32", (True, 4)))
def test_block_size_must_be_positive_ints(bad):
    with pytest.raises(ValueError, match=r"block_size must be a positive int.*block_size=32"):
        config("block_movement", block_size=bad)


def test_block_size_defaults_to_32_and_pairs_are_kept():
    assert mplib.PruningConfig(method="block_movement", keep_ratio=0.5).block_size == (32, 32)
    assert config("block_movement", block_size=[2, 4]).block_size == (2, 4)


def test_head_size_is_required_and_must_fit():
    with pytest.raises(ValueError, match=r"needs head_size.*head_size=64"):
        mplib.PruningConfig(method="head_movement", keep_ratio=0.5)
    with pytest.raises(ValueError, match="head_size must be a positive int"):
        mplib.PruningConfig(method="head_movement", keep_ratio=0.5, head_size=0)
    with pytest.raises(ValueError, match=r"not a whole number of heads of head_size=5.*"
                                         r"hidden_size // num_attention_heads"):
        mplib.wrap(make_model("bert"),
                   mplib.PruningConfig(method="head_movement", keep_ratio=0.5, head_size=5))


@pytest.mark.parametrize("option,value", (("block_size", 4), ("head_size", 8)))
@pytest.mark.parametrize("method", ("movement", "neuron_movement"))
def test_structure_options_refused_by_methods_that_do_not_read_them(method, option, value):
    with pytest.raises(ValueError, match=f"does not use {option}.*Drop {option}"):
        mplib.PruningConfig(method=method, keep_ratio=0.5, **{option: value})


# -- (c) a new method is one class and one registry entry --------------------------------------
class BelowMagnitude(TopV):
    """Keep the *smallest* ``|W|`` (a deliberately odd Top_v rule)."""

    name = "below_magnitude"
    scores = "none"
    chapter = 'planned chapter "Test fixture"'

    def ranking_source(self, layer):
        return -layer.weight.abs(), False


class SquareGate(PruningMethod):
    """``M = 1[S > tau]`` passed straight through, and the penalty ``mean_m mean_ij S^2``."""

    name = "square_gate"
    knobs = ("tau", "lam")
    scores = "parameter"
    lam_schedule = "constant"
    default_score_init = 0.25
    chapter = 'planned chapter "Test fixture"'

    @classmethod
    def check_config(cls, config):
        if config.tau is None:
            config.tau = 0.0

    def forward_mask(self, layer):
        hard = (layer.scores > layer.tau).to(layer.scores.dtype)
        return hard + (layer.scores - layer.scores.detach())  # (S - S) is exactly 0

    def mask(self, layer):
        return (layer.scores.detach() > layer.tau).to(layer.weight.dtype)

    def scheduled(self, curve):
        return {"tau": self.config.tau, "lam": self.lam_at(curve)}

    def penalty(self, scores):
        return torch.stack([(s**2).mean() for s in scores]).mean()


@pytest.fixture
def extended_registry(monkeypatch):
    original = mplib.methods.METHODS
    assert mplib.config.METHODS is original and mplib.METHODS is original  # one dict today
    copy = {**original, BelowMagnitude.name: BelowMagnitude, SquareGate.name: SquareGate}
    for module in (mplib.methods, mplib.config, mplib):
        monkeypatch.setattr(module, "METHODS", copy)
    yield copy
    assert BelowMagnitude.name not in original  # the real registry was never touched


@pytest.mark.parametrize("scope", ("local", "global"))
def test_a_registered_topv_class_runs_through_config_wrap_and_pruner(extended_registry, scope):
    model = make_model("mlp")
    cfg = mplib.PruningConfig(method="below_magnitude", keep_ratio=0.25, scope=scope,
                              target_modules=MLP_TARGETS)
    pruner = mplib.Pruner(model, cfg, total_steps=8, warmup_steps=1, cooldown_steps=2)
    layers = mplib.masked_layers(model)
    assert pruner.values_at(8) == {"step": 8, "keep_ratio": 0.25}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = mlp_input()
    for t in range(8):
        pruner.step(t)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    pruner.step(8)
    ranked = [-lay.weight.detach().abs() for lay in layers.values()]
    if scope == "local":
        want = [oracle_topk_mask(r, exact_ceil("0.25", r.numel())) for r in ranked]
    else:
        want = oracle_global(ranked, exact_ceil("0.25", sum(r.numel() for r in ranked)))[2]
    for lay, w in zip(layers.values(), want, strict=True):
        assert torch.equal(lay.mask(), w)
    mplib.distributed.check_supported("below_magnitude")


def test_a_registered_scored_class_with_penalty_runs_and_bakes(extended_registry, monkeypatch):
    model = make_model("mlp").double()
    cfg = mplib.PruningConfig(method="square_gate", tau=0.3, lam=0.5, target_modules=MLP_TARGETS)
    assert cfg.score_init_value == 0.25 and cfg.lam_schedule == "constant"
    pruner = mplib.Pruner(model, cfg, total_steps=6, warmup_steps=1, cooldown_steps=1)
    layers = mplib.masked_layers(model)
    assert all(isinstance(lay.scores, nn.Parameter) for lay in layers.values())
    assert pruner.values_at(3) == {"step": 3, "tau": 0.3, "lam": 0.5}
    randomise_scores(layers)
    scores = [lay.scores for lay in layers.values()]
    want = 0.5 * sum(sum(v * v for v in s.detach().reshape(-1).tolist()) / s.numel()
                     for s in scores) / len(scores)
    assert float(pruner.penalty().detach()) == pytest.approx(want, rel=1e-12)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = mlp_input(torch.float64)
    model.train()
    for t in range(6):
        pruner.step(t)
        (F.cross_entropy(model(x), y) + pruner.penalty()).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    masks = {n: indicator(lay.scores, lambda s: s > 0.3) for n, lay in layers.items()}
    weights = {n: lay.weight.detach().clone() for n, lay in layers.items()}
    with torch.no_grad():
        out = model(x)
    mplib.bake(model)
    assert not mplib.masked_layers(model)
    with torch.no_grad():
        assert torch.equal(model(x), out)
    for n, m in masks.items():
        assert torch.equal(model.get_submodule(n).weight.detach(), weights[n] * m)
    monkeypatch.setattr(mplib.distributed, "world_size", lambda: 2)
    mplib.distributed.check_supported("square_gate")  # ddp defaults to "exact"


def test_unregistered_method_is_unknown():
    with pytest.raises(ValueError, match="unknown pruning method 'square_gate'"):
        mplib.PruningConfig(method="square_gate", tau=0.3)
