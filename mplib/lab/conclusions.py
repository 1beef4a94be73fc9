"""The paper's conclusions C1-C7 and C11-C13 (paper §6-§7, Figs. 2-6) checked on result files.

Runs are compared only inside one *setting* (same task, profile, result-relevant overrides as in
:func:`~mplib.lab.tables.variant`, ``distill`` and ``scope``) and paired by seed; C7 and C11
compare a setting with its twin differing only in ``distill`` / ``scope``. ``A(v)``: accuracy
(``metric`` split, points) of method A (MaP magnitude, MvP movement, SMvP soft movement, L0) at
remaining fraction v. A conclusion is a set of per-seed gaps g, each judged with a margin mu:
``max(noise, max_s g - min_s g)`` (the seed spread within the setting) for gt / lt, so a gap must
beat both; ``noise`` for the tolerances ge / near; none for pos::

    gt: holds if g > mu, fails if g < -mu       ge: holds if g >= -mu, fails otherwise
    lt: holds if g < -mu, fails if g > mu       near: holds if |g| <= mu, fails otherwise
    pos: holds if g > 0, fails otherwise        info: reported only

A paired seed passes if all its gaps hold and fails if any fails: "holds" if every paired seed
(of every setting) passes, "does not hold" if every one fails, else "inconclusive"; "untested"
if no setting has the runs (``why`` says what the closest setting lacks). The rules::

    C1   MvP(10%) - MaP(10%) [gt];  (MvP(3%) - MaP(3%)) - (MvP(10%) - MaP(10%)) [gt]
    C2   d_A = A(10%) - A(3%):  d_MaP - 2 d_MvP [gt]     (slopes d_A / 7 in points per point)
    C3   each shared v >= 50%:  MaP(v) - MvP(v) [ge];  dense - MvP(v) [gt]
    C4   sparsest shared v < 30%: MvP(v) - MaP(v) [gt];  each shared v >= 30%: MaP - MvP [gt]
    C5   SMvP(3%) - MvP(3%) [gt];  SMvP(10%) - MvP(10%) [ge]
    C6   |MvP(3%) - MaP(3%)| - |MvP(3%) - L0(3%)| [gt]
    C7   A_KD(v) - A(v) [ge], each A, v in {10%, 3%} run both ways; each pair A, B at 3%:
         (A - B)_KD * sign(A - B) [ge], sign 0 when |A - B| <= noise
    C11  MvP_global(10%) - MvP_local(10%) [near];  MvP_global(3%) - MvP_local(3%) [gt]
    C12  global runs, least-squares slope b of remaining (points) on layer index, margin from
         slope_noise:  b_MvP [lt];  b_MaP [near]
    C13  soft runs of one seed and tau, by increasing lam:  min_i r(lam_i) - r(lam_i+1) [pos]

SMvP(v) and L0(v) are interpolated linearly in the remaining fraction between the two runs of the
seed's lam grid (``tau`` unset) whose achieved remaining fractions bracket v, as the paper built
Tables 2-3 (paper.md §5.3); a seed whose grid does not bracket v is not paired.

Taught in: book/11_reproducing.ipynb.
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations, pairwise
from pathlib import Path
from statistics import linear_regression
from types import SimpleNamespace

from .tables import format_table, load_results, variant

__all__ = ["CONCLUSIONS", "check_conclusions", "format_conclusions", "group_results",
           "interpolate_at", "layer_slope", "setting_key"]

HIGH, VERY_HIGH = 0.1, 0.03  # the paper's "10 %" and "3 %" remaining
GRID_METHODS = ("soft_movement", "l0")  # reach a sparsity only through lam
SHORT = {"magnitude": "MaP", "movement": "MvP", "soft_movement": "SMvP", "l0": "L0"}
_PASS = {"gt": lambda g, m: g > m, "lt": lambda g, m: g < -m, "ge": lambda g, m: g >= -m,
         "near": lambda g, m: abs(g) <= m, "pos": lambda g, m: g > 0, "info": lambda g, m: True}
_FAIL = {"gt": lambda g, m: g < -m, "lt": lambda g, m: g > m, "ge": lambda g, m: g < -m,
         "near": lambda g, m: abs(g) > m, "pos": lambda g, m: g <= 0, "info": lambda g, m: False}
_TWIN = {3: (False, True), 4: ("local", "global")}  # setting_key field -> (base, twin) values
_MA_MV = [(m, v) for v in (HIGH, VERY_HIGH) for m in ("magnitude", "movement")]


def setting_key(res: dict) -> tuple:
    """``(task, profile, variant, distill, scope)``: runs are compared only within one key."""
    spec = res["spec"]
    return (spec["task"], res["profile"]["name"], variant(res), bool(spec["distill"]),
            spec.get("scope", "local"))


def group_results(results) -> dict[tuple, list[dict]]:
    """The result dicts grouped by :func:`setting_key`."""
    groups = defaultdict(list)
    for res in results:
        groups[setting_key(res)].append(res)
    return dict(groups)


def interpolate_at(points, target: float) -> float | None:
    """The value at remaining fraction ``target``, linear in the remaining fraction between the
    two neighbouring ``(remaining, value)`` points that bracket it (how the paper's Tables 2-3
    match its sweeps, paper.md §5.3); None if none bracket it."""
    pts = sorted((r, a) for r, a in points if r > 0)
    for (r0, a0), (r1, a1) in pairwise(pts):
        if r0 <= target <= r1:
            return a0 if r0 == r1 else a0 + (a1 - a0) * (target - r0) / (r1 - r0)
    return next((a for r, a in pts if r == target), None)


def layer_slope(per_layer: dict | None) -> float | None:
    """Least-squares slope of the remaining fraction (points) against the layer index."""
    xs = sorted(int(k) for k in per_layer or {})
    ys = [100.0 * per_layer[str(x)] for x in xs]
    return linear_regression(xs, ys).slope if len(xs) > 1 else None


def _diff(a: dict, b: dict, k: float = 1.0) -> dict:
    """``{seed: a - k * b}`` over the seeds both have."""
    return {s: a[s] - k * b[s] for s in a.keys() & b.keys()}


def _pct(v: float) -> str:
    return f"{100 * v:g}%"


class _Missing(Exception):
    """Raised by a check when a setting lacks runs; ``args[0]``: what is missing."""


class _Setting:
    """The runs of one setting, read as ``{seed: value}`` dicts."""

    def __init__(self, key, runs, metric):
        task, profile, var, distill, scope = self.key = key
        self.label = "/".join([profile, task, var] + ["distil"] * distill + [scope] * (
            scope != "local"))
        self.runs, self.metric = runs, metric

    def runs_of(self, method, keep=None) -> list[dict]:
        def at(k):
            return keep is None or (k is not None and math.isclose(k, keep))
        return [r for r in self.runs if r["spec"]["method"] == method
                and at(r["spec"].get("keep_ratio"))]

    def keeps(self, *methods) -> list[float]:
        return sorted(set.intersection(*({r["spec"]["keep_ratio"] for r in self.runs_of(m)}
                                         for m in methods)) - {None})

    def acc(self, method, at=None) -> dict:
        """``{seed: accuracy in points}`` at keep ``at`` (interpolated for lam methods)."""
        def pts(r):
            return 100.0 * r["metrics"][self.metric]["accuracy"]
        if method not in GRID_METHODS:
            return {r["spec"]["seed"]: pts(r) for r in self.runs_of(method, at)}
        grid = defaultdict(list)
        for r in self.runs_of(method):
            if r["spec"].get("tau") is None:
                grid[r["spec"]["seed"]].append((r["remaining"]["global"], pts(r)))
        vals = {s: interpolate_at(g, at) for s, g in grid.items()}
        return {s: v for s, v in vals.items() if v is not None}

    def get(self, *needs) -> list[dict]:
        """``acc`` of each ``(method, keep)``; raises :class:`_Missing` naming the absent ones."""
        got = [self.acc(m, at) for m, at in needs]
        miss = [m if m == "dense" else f"{m} lam grid bracketing {_pct(at)}"
                if m in GRID_METHODS else f"{m} keep {at:g}"
                for (m, at), g in zip(needs, got, strict=True) if not g]
        if miss:
            raise _Missing(miss)
        return got


# A check maps one setting (or a setting and its twin) to gaps (name, kind, {seed: g}[, noise]).
def _c1(s, o):
    ma10, mv10, ma3, mv3 = s.get(*_MA_MV)
    g10, g3 = _diff(mv10, ma10), _diff(mv3, ma3)
    return [("MvP-MaP@10%", "gt", g10), ("MvP-MaP@3%", "info", g3),
            ("MvP-MaP growth 10%->3%", "gt", _diff(g3, g10))]


def _c2(s, o):
    ma10, mv10, ma3, mv3 = s.get(*_MA_MV)
    drop_ma, drop_mv, span = _diff(ma10, ma3), _diff(mv10, mv3), 100 * (HIGH - VERY_HIGH)
    return [("MaP slope", "info", {k: v / span for k, v in drop_ma.items()}),
            ("MvP slope", "info", {k: v / span for k, v in drop_mv.items()}),
            ("MaP drop-2xMvP drop", "gt", _diff(drop_ma, drop_mv, 2))]


def _c3(s, o):
    keeps = [v for v in s.keeps("magnitude", "movement") if v >= 0.5]
    if not keeps:
        raise _Missing(["magnitude and movement at a shared keep >= 0.5"])
    (dense,) = s.get(("dense", None))
    gaps = [(v, *s.get(("magnitude", v), ("movement", v))) for v in keeps]
    return [g for v, ma, mv in gaps for g in ((f"MaP-MvP@{_pct(v)}", "ge", _diff(ma, mv)),
                                              (f"dense-MvP@{_pct(v)}", "gt", _diff(dense, mv)))]


def _c4(s, o):
    keeps = s.keeps("magnitude", "movement")
    low, high = [v for v in keeps if v < 0.3], [v for v in keeps if v >= 0.3]
    if not (low and high):
        raise _Missing(["magnitude and movement at shared keeps below and at/above 0.3"])
    gap = {v: _diff(*s.get(("movement", v), ("magnitude", v))) for v in keeps}
    return [(f"MvP-MaP@{_pct(low[0])}", "gt", gap[low[0]])] + [
        (f"MaP-MvP@{_pct(v)}", "gt", {k: -g for k, g in gap[v].items()}) for v in high]


def _c5(s, o):
    mv3, sm3, mv10, sm10 = s.get(*[(m, v) for v in (VERY_HIGH, HIGH)
                                   for m in ("movement", "soft_movement")])
    return [("SMvP-MvP@3%", "gt", _diff(sm3, mv3)), ("SMvP-MvP@10%", "ge", _diff(sm10, mv10))]


def _c6(s, o):
    ma, mv, l0 = s.get(*[(m, VERY_HIGH) for m in ("magnitude", "movement", "l0")])
    to_l0, to_map = _diff(mv, l0), _diff(mv, ma)
    both = to_map.keys() & to_l0.keys()
    return [("MvP-L0@3%", "info", to_l0), ("MvP-MaP@3%", "info", to_map),
            ("|MvP-MaP|-|MvP-L0|@3%", "gt", {k: abs(to_map[k]) - abs(to_l0[k]) for k in both})]


def _c7(plain, kd, o):
    out = [(f"KD lift {SHORT[m]}@{_pct(v)}", "ge", _diff(kd.acc(m, v), plain.acc(m, v)))
           for m in SHORT for v in (HIGH, VERY_HIGH)]
    out = [g for g in out if g[2]]
    at3 = [m for m in SHORT if f"KD lift {SHORT[m]}@3%" in {g[0] for g in out}]
    for a, b in combinations(at3, 2):  # a and b at 3 % keep their order without distillation
        before, after = (_diff(s.acc(a, VERY_HIGH), s.acc(b, VERY_HIGH)) for s in (plain, kd))
        sign = {k: 0 if abs(d) <= o.noise else math.copysign(1, d) for k, d in before.items()}
        out.append((f"KD keeps {SHORT[a]}/{SHORT[b]} order@3%", "ge",
                    {k: after[k] * sign[k] for k in after.keys() & sign.keys()}))
    if not out:
        raise _Missing(["a method at keep 0.1 or 0.03 with and without distillation"])
    return out


def _c11(local, glob, o):
    (l10, l3), (g10, g3) = (s.get(("movement", HIGH), ("movement", VERY_HIGH))
                            for s in (local, glob))
    return [("global-local MvP@10%", "near", _diff(g10, l10)),
            ("global-local MvP@3%", "gt", _diff(g3, l3))]


def _c12(s, o):
    keeps = s.keeps("magnitude", "movement") if s.key[4] == "global" else []
    if not keeps:
        raise _Missing(["magnitude and movement with scope 'global' at a shared keep"])

    def slopes(method, v):
        got = {r["spec"]["seed"]: layer_slope(r["remaining"]["per_layer"])
               for r in s.runs_of(method, v)}
        return {k: b for k, b in got.items() if b is not None}

    return [g for v in keeps for g in (
        (f"MvP slope@{_pct(v)}", "lt", slopes("movement", v), o.slope_noise),
        (f"MaP slope@{_pct(v)}", "near", slopes("magnitude", v), o.slope_noise))]


def _c13(s, o):
    sweeps = defaultdict(lambda: defaultdict(dict))  # tau -> seed -> lam -> remaining (points)
    for r in s.runs_of("soft_movement"):
        sp = r["spec"]
        sweeps[sp.get("tau")][sp["seed"]][sp["lam"]] = 100.0 * r["remaining"]["global"]
    out = [("min decrease in remaining" + ("" if tau is None else f" (tau {tau:g})"), "pos",
            {seed: min(rem[a] - rem[b] for a, b in pairwise(sorted(rem)))
             for seed, rem in by_seed.items() if len(rem) >= 2}, 0.0)
           for tau, by_seed in sweeps.items()]
    out = [g for g in out if g[2]]
    if not out:
        raise _Missing(["soft_movement at two or more values of lam"])
    return out


CONCLUSIONS = (  # (id, claim, twin field of setting_key or None, runs needed, check)
    ("C1", "MvP beats MaP at 10% and by more at 3%", None, "MaP, MvP at 10%, 3%", _c1),
    ("C2", "MaP falls >= 2x faster than MvP, 10%->3%", None, "MaP, MvP at 10%, 3%", _c2),
    ("C3", "MaP >= MvP at >= 50%; MvP below dense there", None, "dense, MaP, MvP >= 50%", _c3),
    ("C4", "MaP/MvP cross over below 30% remaining", None, "MaP, MvP below and above 30%", _c4),
    ("C5", "SMvP beats MvP at 3%, matches it at 10%", None, "MvP, SMvP at 10%, 3%", _c5),
    ("C6", "MvP-L0 gap small next to MvP-MaP gap at 3%", None, "MaP, MvP, L0 at 3%", _c6),
    ("C7", "distillation lifts every method, keeps 3% order", 3, "runs with and without KD", _c7),
    ("C11", "global ~ local MvP at 10%, global better at 3%", 4, "MvP local+global", _c11),
    ("C12", "global MvP prunes top layers most; MaP flat", None, "global MaP, MvP", _c12),
    ("C13", "SMvP remaining strictly falls as lam grows", None, "SMvP at >= 2 lams", _c13),
)
"""The checked conclusions, numbered as in paper.md §6."""


def _judge(checked, noise) -> dict:
    """Verdict over every (setting, seed) unit of ``checked``: [(label, seeds, gaps)]."""
    units, values, failed = [], defaultdict(list), set()
    for label, seeds, gaps in checked:
        ok, bad = dict.fromkeys(seeds, True), dict.fromkeys(seeds, False)
        for name, kind, vals, *own in gaps:
            xs = [vals[s] for s in seeds]
            margin = max((own or [noise])[0], (max(xs) - min(xs)) * (kind in ("gt", "lt")))
            for s in seeds:
                ok[s] &= _PASS[kind](vals[s], margin)
                if _FAIL[kind](vals[s], margin):
                    bad[s] = True
                    failed.add(name)
                values[name].append(vals[s])
        units += [(label, ok[s], bad[s]) for s in seeds]
    n, n_ok, n_bad = len(units), sum(u[1] for u in units), sum(u[2] for u in units)
    why = f"{n_ok} of {n} paired seed(s) pass, {n_bad} fail"
    return dict(measured={k: sum(v) / len(v) for k, v in values.items()},
                spread={k: [min(v), max(v)] for k, v in values.items()},
                seeds=n, settings=sorted({u[0] for u in units}),
                verdict="holds" if n_ok == n else "does not hold" if n_bad == n else "inconclusive",
                why=why + (f" (failing: {', '.join(sorted(failed))})" if failed else ""))


def check_conclusions(results, *, metric: str = "test", noise: float = 1.0,
                      slope_noise: float = 0.5) -> list[dict]:
    """One row per conclusion of :data:`CONCLUSIONS` (rules in the module docstring).

    ``results``: result dicts (runner files or plain dicts with their keys) or a folder.
    ``noise``: smallest gap counted as real, in accuracy points; ``slope_noise``: the same for
    C12's slopes, in points of remaining per layer. Row keys: ``id, claim, measured, spread,
    seeds, settings, verdict, why``; ``measured`` maps each gap to its mean over the paired
    seeds and ``spread`` to its ``[min, max]``; ``seeds`` counts (setting, seed) pairs.
    """
    if isinstance(results, (str, Path)):
        results = load_results(results)
    settings = {k: _Setting(k, runs, metric) for k, runs in group_results(results).items()}
    opts, rows = SimpleNamespace(noise=noise, slope_noise=slope_noise), []
    for cid, claim, field, needs, check in CONCLUSIONS:
        checked, lacking = [], []
        for key, s in settings.items():
            group = (s,)
            if field is not None:  # the twin that differs only in distill / scope
                twin = key[:field] + (_TWIN[field][1],) + key[field + 1:]
                if key[field] != _TWIN[field][0] or twin not in settings:
                    continue
                group = (s, settings[twin])
            label = " vs ".join(g.label for g in group)
            try:
                gaps = check(*group, opts)
            except _Missing as e:
                lacking.append((label, e.args[0]))
                continue
            seeds = sorted(set.intersection(*(set(g[2]) for g in gaps)))
            if seeds:
                checked.append((label, seeds, gaps))
            else:
                lacking.append((label, ["one seed shared by all the runs needed"]))
        if checked:
            rows.append(dict(id=cid, claim=claim, **_judge(checked, noise)))
            continue
        why = f"needs {needs}"
        if lacking:
            where, miss = min(lacking, key=lambda x: len(x[1]))
            why += f"; closest, {where}, lacks {', '.join(miss)}"
        rows.append(dict(id=cid, claim=claim, measured={}, spread={}, seeds=0, settings=[],
                         verdict="untested", why=why + " (no such pair of settings)" * (
                             not lacking and field is not None)))
    return rows


def format_conclusions(rows: list[dict]) -> str:
    """Plain-text table of :func:`check_conclusions` rows (gaps as mean [min, max] over seeds)."""
    def gap(k, v, lo, hi):
        return f"{k} {v:+.2f}" + (f" [{lo:+.2f},{hi:+.2f}]" if hi - lo > 5e-3 else "")

    def gaps(r):
        return "; ".join(gap(k, v, *r["spread"][k]) for k, v in r["measured"].items()) or "-"

    return format_table([dict(id=r["id"], verdict=r["verdict"], seeds=str(r["seeds"]),
                              claim=r["claim"], measured=gaps(r), why=r["why"]) for r in rows])
