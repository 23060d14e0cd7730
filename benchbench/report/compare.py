"""Equal-compute comparison of families: best accuracy at each budget (interpolated on the
family's frontier in log-compute, never extrapolated), pairwise differences with bootstrap
confidence intervals over seeds, and the compute multiplier (paper section 4.4: ViT needs
2-4x less compute than BiT for the same accuracy).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from benchbench.report.evidence import (
    COMPARED,
    MIN_REPLICATES,
    basis,
    holm,
    interp_weights,
    p_value,
    stable_ci,
    t_draws,
    t_quantile,
    welch_dof,
)
from benchbench.report.frontier_math import (  # noqa: F401 - re-exported for callers
    AT_LEAST,
    AT_MOST,
    EXACT,
    best_at,
    beyond_last,
    compute_multiplier,
    compute_to_reach,
    first_crossing,
    reach,
)
from benchbench.report.load import families_in
from benchbench.report.pareto import pareto_front

# Compute values within 20% of each other are one budget when the grid comes from the rows.
CLUSTER_RATIO = 1.2
MAX_BUDGETS = 12


def _nice(v: float) -> float:
    """Round to 2 significant digits (budgets are read by people)."""
    if not np.isfinite(v) or v <= 0:
        return v
    e = np.floor(np.log10(v)) - 1
    return float(np.round(v / 10**e) * 10**e)


def budget_grid(train: pd.DataFrame, x: str = "compute") -> np.ndarray:
    """The budgets of the study: the distinct FLOP budgets the runs were given (`budget`:
    `train_flops_budget`, or `train.flops` in older rows) when the compute axis is
    train_flops, else the compute values clustered within 20% (each cluster -> its geometric
    mean, 2 significant digits); more than 12 -> 8 log-spaced."""
    if x == "compute" and "budget" in train and train["budget"].notna().sum() >= 1:
        cfg = np.unique(train["budget"].dropna().to_numpy(dtype=float))
        cfg = cfg[cfg > 0]
        if 1 <= len(cfg) <= MAX_BUDGETS:
            return cfg
    v = np.sort(train[x].dropna().to_numpy(dtype=float))
    v = v[v > 0]
    if len(v) == 0:
        return v
    clusters, cur = [], [v[0]]
    for val in v[1:]:
        if val <= cur[0] * CLUSTER_RATIO:
            cur.append(val)
        else:
            clusters.append(cur)
            cur = [val]
    clusters.append(cur)
    grid = np.array([_nice(float(np.exp(np.mean(np.log(c))))) for c in clusters])
    if len(grid) > MAX_BUDGETS:
        grid = np.array([_nice(g) for g in np.geomspace(v[0], v[-1], 8)])
    return np.unique(grid)


def seed_spread(values: Sequence[tuple]) -> tuple[float, int]:
    """Pooled seed standard deviation over points (ddof=1 each) and its degrees of freedom."""
    ss, dof = 0.0, 0
    for vals in values:
        v = np.asarray(vals, dtype=float)
        if len(v) >= 2:
            ss += float(((v - v.mean()) ** 2).sum())
            dof += len(v) - 1
    return (np.sqrt(ss / dof) if dof else np.nan), dof


def bootstrap_means(
    values: Sequence[tuple], n_boot: int, rng: np.random.Generator,
    fallback: tuple[float, int] | None = None,
) -> np.ndarray:
    """(n_boot, n_points) replicates of each point's seed mean.

    Parametric bootstrap over seeds: mean_i + s/sqrt(n_i) * t(dof), with the seed spread s
    pooled over the points given (one family), so 2-3 seeds per point still give an honest
    interval. Resampling 2-3 seeds with replacement has too few distinct outcomes: its 95%
    interval covered the truth in ~73% of trials with 3 seeds. Points without any repeated
    seed use `fallback` (the spread pooled over the whole study); without one they get NaN
    replicates: no interval, never a zero-width one. The t draws come from scrambled Sobol
    points (evidence.t_draws), so the intervals barely move with the bootstrap seed.
    """
    means = np.array([np.mean(v) for v in values], dtype=float)
    out = np.tile(means, (n_boot, 1))
    s, dof = seed_spread(values)
    if not dof and fallback is not None and fallback[1]:
        s, dof = fallback
    if not dof:
        return np.full_like(out, np.nan)
    if n_boot:
        n = np.array([len(v) for v in values], dtype=float)
        out += s / np.sqrt(n) * t_draws(n_boot, [dof] * len(values), rng)
    return out


Z95 = 1.96  # two-sided 95% normal quantile: the test-set noise band is +-Z95 standard errors
CROSS_GRID = 64  # budgets (log-spaced over two families' shared range) searched for a sign change


def binomial_se(p: np.ndarray | float, n: np.ndarray | float) -> np.ndarray:
    """Standard error of an accuracy p measured on n test images (NaN without n)."""
    p, n = np.asarray(p, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(all="ignore"):
        return np.where(n > 0, np.sqrt(p * (1 - p) / n), np.nan)


@dataclass
class EqualCompute:
    budgets: np.ndarray
    best: pd.DataFrame  # budget, family, acc, acc_lo, acc_hi, min_seeds, beyond, n_test, basis
    pairs: pd.DataFrame  # budget, family_a, family_b, acc_a, acc_b, basis_a, basis_b, diff
    #   (+CI, se, p, called), multiplier (exact, +CI), mult_kind ("=", "<=", ">=", "" unknown),
    #   mult_bound and bound_called, size_a/size_b (training-set sizes the values rest on)
    bootstrapped: bool  # False when no point has two seeds and no --seed-sd (no CI possible)
    crossovers: pd.DataFrame = field(default_factory=pd.DataFrame)  # per pair: first sign change
    spread: dict[str, str] = field(default_factory=dict)  # family -> "own", "pooled", "given", "none"
    last_run: dict[str, float] = field(default_factory=dict)  # family -> its largest compute
    front_end: dict[str, float] = field(default_factory=dict)  # family -> its last frontier run
    first_run: dict[str, float] = field(default_factory=dict)  # family -> its smallest compute
    selected_on: str = "test"  # "validation" when frontiers were chosen on val_top1
    seed_sd: float | None = None  # the user's seed noise estimate (accuracy fraction), if any
    sizes: dict[str, tuple] = field(default_factory=dict)  # family -> training-set sizes run


def _mult_kind(kind: float, ref_beyond: bool) -> str:
    """A budget past the reference family's last run holds its accuracy flat, a lower bound
    on what it would reach: the multiplier is then at least the value, or unknown."""
    if not np.isfinite(kind):
        return ""
    if ref_beyond:
        return "" if kind == AT_MOST else ">="
    return {EXACT: "=", AT_MOST: "<=", AT_LEAST: ">="}[kind]


@dataclass
class _Fam:
    """One family's points and frontier, and its seed spread."""
    x: np.ndarray
    y: np.ndarray
    sel: np.ndarray | None
    n: np.ndarray  # seeds per point
    size: np.ndarray  # training-set size per point
    fi: np.ndarray  # frontier indices, by compute
    s: float  # seed s.d. (accuracy fraction); NaN: unknown
    dof: float
    n_test: float

    def weights(self, at: np.ndarray) -> np.ndarray:
        """(len(at), n_points) matrix W with best accuracy = W @ y on the fixed frontier."""
        W = np.zeros((len(at), len(self.x)))
        fx = self.x[self.fi]
        for i, b in enumerate(at):
            W[i, self.fi] = interp_weights(fx, b)
        return W

    def at(self, b: float) -> tuple[float, float, int, tuple]:
        """(best accuracy, seed variance of it, fewest seeds behind it, sizes behind it)."""
        w = interp_weights(self.x[self.fi], b)
        if not w.any():
            return np.nan, np.nan, 0, ()
        used = self.fi[w > 0]
        var = self.s**2 * float((w[w > 0] ** 2 / self.n[used]).sum())
        sizes = tuple(sorted({float(v) for v in self.size[used] if np.isfinite(v)}))
        return float(w @ self.y[self.fi]), var, int(self.n[used].min()), sizes


def equal_compute(
    points: pd.DataFrame,
    budgets: Sequence[float] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    x: str = "compute",
    seed_sd: float | None = None,
) -> EqualCompute:
    """The equal-compute comparison of every family pair on seed-aggregated `points`
    (columns family, `x`, acc, acc_values; `sel` and `selected_on` when aggregate_points made
    them). Pairs are ordered ViT, Hybrid, BiT, ... and `multiplier` is
    compute_b(acc_a(budget)) / budget: how many times the budget family b needs to match
    family a (paper: BiT needs 2-4x ViT's compute). Frontiers are chosen on validation
    accuracy when every point has it, and show test accuracy.

    Intervals of accuracies and differences are analytic (t over the interpolated seed
    means, Welch-Satterthwaite dof), so they do not depend on the bootstrap seed; only the
    multiplier and crossover intervals are bootstrapped. A difference is `called` only
    where both values rest on runs (`basis` run or interpolated), every point behind them
    has 2+ seeds (or `seed_sd`, the user's seed s.d. as an accuracy fraction, is given),
    and Holm's procedure over the pair's compared budgets rejects at the 5% level."""
    rng = np.random.default_rng(seed)
    budgets = np.asarray(budget_grid(points, x) if budgets is None else budgets, dtype=float)
    fams = families_in(points)
    on_val = "selected_on" in points and bool((points["selected_on"] == "validation").all()) \
        and len(points) > 0
    pooled = seed_spread(list(points["acc_values"]))
    data: dict[str, _Fam] = {}
    spread, last, first, sizes, end = {}, {}, {}, {}, {}
    for f in fams:
        d = points[(points["family"] == f) & points[x].notna() & points["acc"].notna()]
        d = d[d[x] > 0]
        sel = d["sel"].to_numpy(float) if on_val else None
        n_test = pd.to_numeric(d.get("n_test", pd.Series(np.nan, index=d.index)), errors="coerce")
        own = seed_spread(list(d["acc_values"]))
        if seed_sd is not None:
            (s, dof), spread[f] = (seed_sd, np.inf), "given"
        elif own[1]:
            (s, dof), spread[f] = own, "own"
        else:
            (s, dof), spread[f] = ((pooled[0], pooled[1]), "pooled") if pooled[1] else ((np.nan, 0), "none")
        xs, ys = d[x].to_numpy(float), d["acc"].to_numpy(float)
        size = pd.to_numeric(d.get("train_size", pd.Series(np.nan, index=d.index)), errors="coerce")
        data[f] = _Fam(x=xs, y=ys, sel=sel, n=d["n_seeds"].to_numpy(float), size=size.to_numpy(float),
                       fi=pareto_front(xs, ys if sel is None else sel), s=float(s), dof=float(dof),
                       n_test=float(n_test.min()) if n_test.notna().any() else np.nan)
        last[f], first[f] = float(xs.max()), float(xs.min())
        end[f] = float(xs[data[f].fi].max())
        sizes[f] = tuple(sorted({float(v) for v in size if np.isfinite(v)}))
    has_ci = seed_sd is not None or bool(pooled[1])
    # the bootstrap of multipliers and crossovers: one Sobol draw over every family's points
    reps: dict[str, np.ndarray] = {}
    if has_ci and n_boot > 0:
        cols = [(f, j) for f in fams for j in range(len(data[f].x))]
        T = t_draws(max(n_boot, MIN_REPLICATES), [data[f].dof for f, _ in cols], rng)
        k = 0
        for f in fams:
            F = data[f]
            m = len(F.x)
            reps[f] = F.y + F.s / np.sqrt(F.n) * T[:, k:k + m]
            k += m

    best_rows, at = [], {}
    for f in fams:
        F = data[f]
        bases = basis(F.x[F.fi], budgets)
        vals = [F.at(b) for b in budgets]
        at[f] = (vals, bases)
        tq = t_quantile(level, F.dof)
        for b, (a, var, nmin, _), bs, bey in zip(budgets, vals, bases, beyond_last(F.x, budgets)):
            half = tq * np.sqrt(var) if has_ci and np.isfinite(var) else np.nan
            best_rows.append(dict(budget=b, family=f, acc=a, acc_lo=float(np.clip(a - half, 0, 1)),
                                  acc_hi=float(np.clip(a + half, 0, 1)), min_seeds=int(F.n.min()),
                                  beyond=bool(bey), n_test=F.n_test, basis=bs, seeds_here=nmin))
    best = pd.DataFrame(best_rows, columns=["budget", "family", "acc", "acc_lo", "acc_hi",
                                            "min_seeds", "beyond", "n_test", "basis", "seeds_here"])

    pair_rows, cross_rows = [], []
    for fa, fb in combinations(fams, 2):
        A, B = data[fa], data[fb]
        (va, ba), (vb, bb) = at[fa], at[fb]
        acc_a = np.array([v[0] for v in va])
        need, kind = reach(B.x, B.y, acc_a, sel=B.sel)
        mult = need / budgets
        bey_a, bey_b = beyond_last(A.x, budgets), beyond_last(B.x, budgets)
        need_basis = basis(B.x[B.fi], np.where(np.isfinite(need), need, np.nan))
        mult_ci = _mult_boot(A, B, reps.get(fa), reps.get(fb), budgets, level)
        rows = []
        for i, b in enumerate(budgets):
            (a, var_a, na, sa), (bv, var_b, nb, sb) = va[i], vb[i]
            diff = a - bv
            se_t = float(np.sqrt(binomial_se(a, A.n_test) ** 2 + binomial_se(bv, B.n_test) ** 2))
            var = var_a + var_b
            dof = welch_dof([(var_a, A.dof), (var_b, B.dof)])
            half = t_quantile(level, dof) * np.sqrt(var) if has_ci and np.isfinite(var) else np.nan
            tot = [(v, d) for v, d in ((var_a, A.dof), (var_b, B.dof), (se_t**2, np.inf))
                   if np.isfinite(v)]
            compared = ba[i] in COMPARED and bb[i] in COMPARED and np.isfinite(diff)
            seeds_ok = seed_sd is not None or (na >= 2 and nb >= 2)
            p = (p_value(diff, np.sqrt(sum(v for v, _ in tot)), welch_dof(tot))
                 if compared and seeds_ok and tot else np.nan)
            mk = _mult_kind(kind[i], bool(bey_a[i]) or ba[i] == "held")
            rows.append(dict(
                budget=b, family_a=fa, family_b=fb, acc_a=a, acc_b=bv, basis_a=ba[i],
                basis_b=bb[i], diff=diff, diff_lo=diff - half, diff_hi=diff + half, se_test=se_t,
                p=p, called=False, compared=compared, a_beyond=bool(bey_a[i]),
                b_beyond=bool(bey_b[i]), multiplier=mult[i] if mk == "=" else np.nan,
                mult_kind=mk, mult_bound=mult[i] if mk in ("<=", ">=") else np.nan,
                mult_lo=mult_ci[0][i] if mk == "=" else np.nan,
                mult_hi=mult_ci[1][i] if mk == "=" else np.nan,
                mult_read=need_basis[i] in COMPARED, bound_p=_bound_p(mk, a, var_a, A, B, se_t),
                bound_called=False, min_seeds_a=int(A.n.min()), min_seeds_b=int(B.n.min()),
                size_a=sa, size_b=sb))
        called_ = holm([r["p"] for r in rows])
        m = max(1, sum(np.isfinite(r["p"]) for r in rows))
        for r, c in zip(rows, called_):
            r["called"] = bool(c)
            r["bound_called"] = bool(c and np.isfinite(r["bound_p"]) and r["bound_p"] <= 0.05 / m
                                     and ((r["mult_kind"] == "<=") == (r["diff"] < 0)))
        pair_rows += rows
        cross_rows.append(_crossover(fa, fb, data, reps, level))
    cols = ["budget", "family_a", "family_b", "acc_a", "acc_b", "basis_a", "basis_b", "diff",
            "diff_lo", "diff_hi", "se_test", "p", "called", "compared", "a_beyond", "b_beyond",
            "multiplier", "mult_kind", "mult_bound", "mult_lo", "mult_hi", "mult_read",
            "bound_p", "bound_called", "min_seeds_a", "min_seeds_b", "size_a", "size_b"]
    pairs = pd.DataFrame(pair_rows, columns=cols)
    crossovers = pd.DataFrame(cross_rows, columns=["family_a", "family_b", "crossover",
                                                   "cross_lo", "cross_hi", "cross_frac",
                                                   "n_changes"])
    return EqualCompute(budgets=budgets, best=best, pairs=pairs, bootstrapped=has_ci,
                        crossovers=crossovers, spread=spread, last_run=last, first_run=first, front_end=end,
                        selected_on="validation" if on_val else "test", seed_sd=seed_sd,
                        sizes=sizes)


def _bound_p(mk: str, a: float, var_a: float, A: _Fam, B: _Fam, se_t: float) -> float:
    """p of the gap a multiplier bound rests on: B's first frontier run above A's value
    ("<="), or B's last frontier run below it (">=")."""
    if mk not in ("<=", ">=") or not np.isfinite(a) or not len(B.fi):
        return np.nan
    j = B.fi[0] if mk == "<=" else B.fi[-1]
    gap = B.y[j] - a if mk == "<=" else a - B.y[j]
    parts = [(var_a, A.dof), (B.s**2 / B.n[j], B.dof), (se_t**2, np.inf)]
    parts = [(v, d) for v, d in parts if np.isfinite(v)]
    if gap <= 0 or not parts:
        return np.nan
    return p_value(gap, np.sqrt(sum(v for v, _ in parts)), welch_dof(parts))


def _mult_boot(A: _Fam, B: _Fam, ra, rb, budgets: np.ndarray, level: float):
    """Bootstrap interval of the exact multiplier per budget (NaN where unstable)."""
    nan = np.full(len(budgets), np.nan)
    if ra is None or rb is None or not np.isfinite(ra).all() or not np.isfinite(rb).all():
        return nan, nan
    acc = ra @ A.weights(budgets).T  # replicates on the fixed frontier, as the t intervals
    acc[:, ~A.weights(budgets).any(axis=1)] = np.nan
    out = _reach_fixed(B, rb, acc) / budgets
    return stable_ci(out, level)


def _reach_fixed(B: _Fam, rb: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Vectorised `reach` on B's fixed frontier, per replicate row: the compute where the
    replicate frontier first reaches `target`, NaN where it is only bounded."""
    fx, fy = B.x[B.fi], rb[:, B.fi]  # (m,), (n_rep, m)
    lx = np.log10(fx)
    above = fy[:, None, :] >= target[:, :, None]  # (n_rep, n_budget, m)
    i = above.argmax(axis=-1)
    ok = above.any(axis=-1) & (i > 0) & np.isfinite(target)
    i0 = np.maximum(i - 1, 0)
    y0 = np.take_along_axis(fy, i0, axis=1)
    y1 = np.take_along_axis(fy, i, axis=1)
    with np.errstate(all="ignore"):
        frac = (target - y0) / (y1 - y0)
        val = 10 ** (lx[i0] + frac * (lx[i] - lx[i0]))
    return np.where(ok, val, np.nan)


def _crossover(fa: str, fb: str, data: dict, reps: dict, level: float) -> dict:
    """The compute where the fa - fb difference first changes sign, searched on a fine grid
    over the compute range both families measured (not where one is held flat), with a
    bootstrap CI over seeds (NaN when unstable) and the share of replicates that change
    sign there at all."""
    row = dict(family_a=fa, family_b=fb, crossover=np.nan, cross_lo=np.nan, cross_hi=np.nan,
               cross_frac=np.nan, n_changes=0)
    A, B = data[fa], data[fb]
    if not (len(A.x) and len(B.x)):
        return row
    lo, hi = max(A.x.min(), B.x.min()), min(A.x.max(), B.x.max())
    if not lo < hi:
        return row
    grid = np.geomspace(lo, hi, CROSS_GRID)

    def d(ya, yb):
        return best_at(A.x, ya, grid, sel=A.sel) - best_at(B.x, yb, grid, sel=B.sel)

    row["crossover"], row["n_changes"] = first_crossing(grid, d(A.y, B.y))
    ra, rb = reps.get(fa), reps.get(fb)
    if ra is not None and rb is not None and np.isfinite(ra).all() and np.isfinite(rb).all():
        D = ra @ A.weights(grid).T - rb @ B.weights(grid).T  # fixed frontiers
        sg = np.sign(D)
        flip = sg[:, :-1] * sg[:, 1:] < 0  # first sign change per replicate, vectorised
        j = flip.argmax(axis=1)
        r_ = np.arange(len(D))
        lx = np.log10(grid)
        with np.errstate(all="ignore"):
            c = 10 ** (lx[j] + D[r_, j] / (D[r_, j] - D[r_, j + 1]) * (lx[j + 1] - lx[j]))
        c = np.where(flip.any(axis=1), c, np.nan)
        ok = np.isfinite(c)
        row["cross_frac"] = float(ok.mean())
        if ok.mean() >= 0.5:
            lo_, hi_ = stable_ci(np.log10(c[ok])[:, None], level)
            if np.isfinite(lo_[0]):
                row["cross_lo"], row["cross_hi"] = 10 ** lo_[0], 10 ** hi_[0]
    return row
