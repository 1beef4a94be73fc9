"""check_conclusions on fixture results: for each conclusion a case that holds, one that does not,
one where seeds disagree and one with runs missing; the linear interpolation against a
hand-computed value; settings kept apart; and a smoke run on the stored results/recipes files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mplib.lab.conclusions import (
    CONCLUSIONS,
    check_conclusions,
    format_conclusions,
    interpolate_at,
    layer_slope,
)

RECIPES = Path(__file__).resolve().parents[1] / "results" / "recipes"


def run(method, acc, *, keep=None, lam=None, tau=None, seed=0, task="rt", profile="ci",
        overrides=None, distill=False, scope="local", remaining=None, per_layer=None, val=None):
    """A minimal result dict: only the keys conclusions.py reads (accuracy given in points)."""
    spec = dict(task=task, method=method, keep_ratio=keep, tau=tau, lam=lam, scope=scope,
                distill=distill, seed=seed, overrides=dict(overrides or {}))
    rem = 1.0 if method == "dense" else keep if remaining is None else remaining
    return dict(run_id=f"{profile}-{task}-{method}-{keep}-{lam}-{tau}-{scope}-{distill}-{seed}",
                spec=spec, profile=dict(name=profile),
                metrics=dict(test=dict(accuracy=acc / 100),
                             validation=dict(accuracy=(acc if val is None else val) / 100)),
                remaining={"global": rem, "per_layer": per_layer})


def grid(method, points, seed=0, **kw):
    """A lam sweep over ``points`` = [(achieved remaining, accuracy)]; lam grows as r falls."""
    return [run(method, a, lam=10.0 * (i + 1), remaining=r, seed=seed, **kw)
            for i, (r, a) in enumerate(sorted(points, reverse=True))]


def row(results, cid, **kw):
    return next(r for r in check_conclusions(results, **kw) if r["id"] == cid)


# One scenario per conclusion: per-seed parameters -> result dicts.
def c1(seeds):  # (MvP - MaP at 10 %, MvP - MaP at 3 %)
    return [r for s, (g10, g3) in enumerate(seeds) for r in (
        run("magnitude", 80, keep=0.1, seed=s), run("movement", 80 + g10, keep=0.1, seed=s),
        run("magnitude", 70, keep=0.03, seed=s), run("movement", 70 + g3, keep=0.03, seed=s))]


def c2(seeds):  # (MaP drop, MvP drop) from 10 % to 3 %
    return [r for s, (dma, dmv) in enumerate(seeds) for r in (
        run("magnitude", 80, keep=0.1, seed=s), run("movement", 80, keep=0.1, seed=s),
        run("magnitude", 80 - dma, keep=0.03, seed=s),
        run("movement", 80 - dmv, keep=0.03, seed=s))]


def c3(seeds):  # (MaP - MvP, dense - MvP) at 50 %
    return [r for s, (a, b) in enumerate(seeds) for r in (
        run("movement", 80, keep=0.5, seed=s), run("magnitude", 80 + a, keep=0.5, seed=s),
        run("dense", 80 + b, seed=s))]


def c4(seeds):  # (MvP - MaP at 10 %, MaP - MvP at 50 %)
    return [r for s, (lo, hi) in enumerate(seeds) for r in (
        run("magnitude", 75, keep=0.1, seed=s), run("movement", 75 + lo, keep=0.1, seed=s),
        run("movement", 80, keep=0.5, seed=s), run("magnitude", 80 + hi, keep=0.5, seed=s))]


def c5(seeds):  # (SMvP - MvP at 3 %, at 10 %); the grid hits 10 % and 3 % exactly
    return [r for s, (d3, d10) in enumerate(seeds) for r in (
        run("movement", 80, keep=0.1, seed=s), run("movement", 70, keep=0.03, seed=s),
        *grid("soft_movement", [(0.2, 82), (0.1, 80 + d10), (0.03, 70 + d3), (0.01, 60)], s))]


def c6(seeds):  # (|MvP - MaP|, |MvP - L0|) at 3 %
    return [r for s, (to_map, to_l0) in enumerate(seeds) for r in (
        run("movement", 70, keep=0.03, seed=s), run("magnitude", 70 - to_map, keep=0.03, seed=s),
        *grid("l0", [(0.1, 75), (0.03, 70 - to_l0), (0.01, 60)], s))]


def c7(seeds):  # (lift by distillation, whether MaP overtakes MvP at 3 % with it)
    out = []
    for s, (lift, flip) in enumerate(seeds):
        plain = {("magnitude", 0.1): 78, ("movement", 0.1): 80, ("magnitude", 0.03): 65,
                 ("movement", 0.03): 72}
        for (m, k), a in plain.items():
            kd = a + lift + (12 if flip and m == "magnitude" and k == 0.03 else 0)
            out += [run(m, a, keep=k, seed=s), run(m, kd, keep=k, seed=s, distill=True)]
    return out


def c11(seeds):  # (global - local MvP at 10 %, at 3 %)
    return [r for s, (d10, d3) in enumerate(seeds) for r in (
        run("movement", 80, keep=0.1, seed=s), run("movement", 70, keep=0.03, seed=s),
        run("movement", 80 + d10, keep=0.1, seed=s, scope="global"),
        run("movement", 70 + d3, keep=0.03, seed=s, scope="global"))]


def _layers(slope):  # 4 layers around 10 % remaining, ``slope`` points per layer
    return {str(i): (10 + slope * (i - 1.5)) / 100 for i in range(4)}


def c12(seeds):  # (MvP slope, MaP slope) of global runs at keep 0.1
    return [r for s, (smv, sma) in enumerate(seeds) for r in (
        run("movement", 80, keep=0.1, seed=s, scope="global", per_layer=_layers(smv)),
        run("magnitude", 80, keep=0.1, seed=s, scope="global", per_layer=_layers(sma)))]


def c13(seeds):  # remaining fractions at lam 10, 100, 1000
    return [run("soft_movement", 75, lam=lam, remaining=r, seed=s)
            for s, rems in enumerate(seeds) for lam, r in zip((10.0, 100.0, 1000.0), rems,
                                                              strict=True)]


CASES = {  # id: (scenario, holds, does not hold, seeds disagree)
    "C1": (c1, [(2, 6), (2.5, 6.5), (2.2, 7)], [(-3, -2), (-3.5, -2)], [(3, 8), (-3, -8)]),
    "C2": (c2, [(10, 2), (11, 2.5)], [(2, 2)], [(10, 2), (2, 2)]),
    "C3": (c3, [(0.5, 3), (0, 3.2)], [(-3, 3)], [(0, 3), (-3, 3)]),
    "C4": (c4, [(3, 2)], [(-3, 2), (-3.2, 2)], [(3, 2), (-3, 2)]),
    "C5": (c5, [(3, 0), (3.5, -0.5)], [(-3, 0)], [(3, 0), (-3, 0)]),
    "C6": (c6, [(10, 1)], [(1, 5)], [(10, 1), (1, 5)]),
    "C7": (c7, [(1, False), (1.5, False)], [(-3, False), (1, True)], [(1, False), (-3, False)]),
    "C11": (c11, [(0.3, 3)], [(3, 3)], [(0.3, 3), (0.3, -3)]),
    "C12": (c12, [(-3, 0.1), (-3.2, 0)], [(2, 0)], [(-3, 0), (3, 0)]),
    "C13": (c13, [(0.5, 0.2, 0.05)], [(0.5, 0.5, 0.05)], [(0.5, 0.2, 0.05), (0.5, 0.6, 0.05)]),
}
MISSING = {  # id: (results lacking a run, text the reason must contain)
    "C1": ([r for r in c1([(2, 6)]) if r["spec"]["keep_ratio"] != 0.03
            or r["spec"]["method"] != "movement"], "movement keep 0.03"),
    "C2": ([r for r in c2([(10, 2)]) if r["spec"]["method"] != "magnitude"], "magnitude keep"),
    "C3": ([r for r in c3([(0, 3)]) if r["spec"]["method"] != "dense"], "dense"),
    "C4": ([r for r in c4([(3, 2)]) if r["spec"]["keep_ratio"] != 0.5], "0.3"),
    "C5": (c1([(2, 6)]) + grid("soft_movement", [(0.2, 82), (0.1, 80), (0.05, 75)]),
           "soft_movement lam grid bracketing 3%"),
    "C6": (c1([(2, 6)]), "l0 lam grid bracketing 3%"),
    "C7": (c1([(2, 6)]), "no such pair"),
    "C11": (c1([(2, 6)]), "no such pair"),
    "C12": (c1([(2, 6)]), "scope 'global'"),
    "C13": (c13([(0.5, 0.2, 0.05)])[:1], "two or more values of lam"),
}


@pytest.mark.parametrize("cid", list(CASES))
def test_each_conclusion_holds_fails_disagrees_and_reports_missing_runs(cid):
    scenario, good, bad, mixed = CASES[cid]
    for seeds, verdict in ((good, "holds"), (bad, "does not hold"), (mixed, "inconclusive")):
        got = row(scenario(seeds), cid)
        assert got["verdict"] == verdict, (seeds, got)
        assert got["seeds"] == len(seeds) and got["measured"] and got["settings"]
    results, reason = MISSING[cid]
    got = row(results, cid)
    assert got["verdict"] == "untested" and reason in got["why"], got
    assert got["seeds"] == 0 and got["measured"] == {} and got["spread"] == {}


def test_measured_gaps_and_spreads_are_in_points():
    got = row(c1([(2, 6), (3, 6)]), "C1")
    assert got["measured"]["MvP-MaP@10%"] == pytest.approx(2.5)
    assert got["spread"]["MvP-MaP@10%"] == pytest.approx([2.0, 3.0])
    assert got["measured"]["MvP-MaP growth 10%->3%"] == pytest.approx(3.5)
    slopes = row(c2([(14, 7)]), "C2")["measured"]
    assert slopes["MaP slope"] == pytest.approx(2.0) and slopes["MvP slope"] == pytest.approx(1.0)
    assert row(c12([(-3, 0.1)]), "C12")["measured"]["MvP slope@10%"] == pytest.approx(-3.0)
    assert layer_slope({"0": 0.3, "1": 0.2, "2": 0.1}) == pytest.approx(-10.0)
    assert layer_slope({"0": 0.3}) is None and layer_slope(None) is None


def test_a_gap_must_beat_the_seed_spread_and_the_noise():
    assert row(c1([(0.5, 6)]), "C1")["verdict"] == "inconclusive"  # 0.5 < noise 1
    assert row(c1([(0.5, 6)]), "C1", noise=0.1)["verdict"] == "holds"
    assert row(c1([(1.5, 8), (4, 10)]), "C1")["verdict"] == "inconclusive"  # 1.5 < spread 2.5


def test_interpolation_is_linear_in_remaining():
    # by hand: 68 + (74 - 68) * (0.03 - 0.01) / (0.05 - 0.01) = 68 + 6 * 0.5 = 71
    assert interpolate_at([(0.05, 74), (0.01, 68)], 0.03) == pytest.approx(71.0, abs=1e-9)
    assert interpolate_at([(0.2, 1), (0.05, 74), (0.01, 68)], 0.03) == pytest.approx(71.0,
                                                                                   abs=1e-9)
    assert interpolate_at([(0.05, 74), (0.03, 70)], 0.03) == 70  # a run at the target
    assert interpolate_at([(0.05, 74), (0.04, 70)], 0.03) is None  # not bracketed
    results = [run("movement", 70, keep=0.03), run("movement", 80, keep=0.1),
               *grid("soft_movement", [(0.5, 83), (0.05, 74), (0.01, 68)])]
    got = row(results, "C5")
    assert got["measured"]["SMvP-MvP@3%"] == pytest.approx(71.0 - 70, abs=1e-9)
    ten = 74 + (83 - 74) * (0.1 - 0.05) / (0.5 - 0.05)  # = 75
    assert got["measured"]["SMvP-MvP@10%"] == pytest.approx(ten - 80)
    # soft runs that set tau are not part of the lam grid used for C5
    tau_set = [dict(r, spec=dict(r["spec"], tau=0.2)) for r in results[2:]]
    assert row(results[:2] + tau_set, "C5")["verdict"] == "untested"


def test_runs_of_other_settings_are_not_mixed_in():
    base = c1([(2, 6)])
    other_variant = [run("magnitude", 99, keep=k, overrides={"epochs": 8}) for k in (0.1, 0.03)]
    other_task = [run("magnitude", 99, keep=k, task="bbc") for k in (0.1, 0.03)]
    other_profile = [run("magnitude", 99, keep=k, profile="cpu") for k in (0.1, 0.03)]
    got = row(base + other_variant + other_task + other_profile, "C1")
    assert got["verdict"] == "holds" and got["seeds"] == 1 and got["settings"] == ["ci/rt/-"]
    movement = [r for r in base if r["spec"]["method"] == "movement"]
    for spread_out in (other_variant, other_task, other_profile,
                       [run("magnitude", 80, keep=k, distill=True) for k in (0.1, 0.03)],
                       [run("magnitude", 80, keep=k, scope="global") for k in (0.1, 0.03)]):
        assert row(movement + spread_out, "C1")["verdict"] == "untested"
    # fields that change how a run executes, not its result, do not split a setting
    threads = [dict(r, spec=dict(r["spec"], overrides={"threads": 1})) for r in movement]
    assert row([r for r in base if r not in movement] + threads, "C1")["verdict"] == "holds"
    # seeds are paired: a movement seed without its magnitude twin is not used
    got = row(base + [run("movement", 99, keep=0.1, seed=7)], "C1")
    assert got["seeds"] == 1 and got["verdict"] == "holds"


def test_two_settings_pool_their_seeds():
    layers2 = [dict(r, spec=dict(r["spec"], overrides={"num_layers": 2})) for r in c1([(-3, -2)])]
    got = row(c1([(2, 6)]) + layers2, "C1")
    assert got["verdict"] == "inconclusive" and got["seeds"] == 2 and len(got["settings"]) == 2


def test_metric_folder_input_and_table(tmp_path):
    results = [run("magnitude", 80, keep=0.1, val=90), run("movement", 85, keep=0.1, val=85),
               run("magnitude", 70, keep=0.03, val=90), run("movement", 80, keep=0.03, val=85)]
    assert row(results, "C1")["verdict"] == "holds"
    assert row(results, "C1", metric="validation")["verdict"] == "does not hold"
    for r in results:
        (tmp_path / f"{r['run_id']}.json").write_text(json.dumps(r))
    (tmp_path / "sweep.json").write_text(json.dumps({"methods": ["movement"]}))  # not a result
    assert check_conclusions(tmp_path) == check_conclusions(results)
    rows = check_conclusions(results)
    assert [r["id"] for r in rows] == [c[0] for c in CONCLUSIONS]
    table = format_conclusions(rows).splitlines()
    assert table[0].split()[:3] == ["id", "verdict", "seeds"] and len(table) == 1 + len(rows)
    assert "MvP-MaP@10% +5.00;" in table[1] and "[" not in table[1]
    table = format_conclusions(check_conclusions(c1([(2, 6), (3, 6)])))
    assert "MvP-MaP@10% +2.50 [+2.00,+3.00]" in table


def test_smoke_on_the_stored_recipe_results():
    if not any(RECIPES.glob("*.json")):
        pytest.skip("no stored results in results/recipes")
    rows = check_conclusions(RECIPES)
    assert [r["id"] for r in rows] == [c[0] for c in CONCLUSIONS]
    verdicts = {"holds", "does not hold", "inconclusive", "untested"}
    assert all(r["verdict"] in verdicts and r["why"] and r["claim"] for r in rows)
    assert format_conclusions(rows).count("\n") == len(rows)
