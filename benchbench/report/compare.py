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

from benchbench.report.load import families_in
from benchbench.report.pareto import pareto_front

# Budgets within 5% outside a family's compute range still count as reached: a run asked
# for B FLOPs does a whole number of steps, so its train_flops lands slightly off B.
RANGE_RTOL = 0.05
# Compute values within 20% of each other are one budget when the grid comes from the rows.
CLUSTER_RATIO = 1.2
MAX_BUDGETS = 12


def _front(
    x: Sequence[float], y: Sequence[float], sel: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Frontier (x, y) chosen on `sel` (validation accuracy) when given, else on y itself;
    and the largest x of any run."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    s = y if sel is None else np.asarray(sel, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(s) & (x > 0)
    x, y, s = x[ok], y[ok], s[ok]
    if len(x) == 0:
        return np.array([]), np.array([]), np.nan
    f = pareto_front(x, s)
    return x[f], y[f], float(x.max())


def best_at(
    x: Sequence[float], y: Sequence[float], at: Sequence[float] | float,
    rtol: float = RANGE_RTOL, sel: Sequence[float] | None = None,
) -> np.ndarray:
    """Best y reachable with at most `at` x (e.g. accuracy within a compute budget).

    Linear interpolation in log10(x) between frontier points (chosen on `sel` when given);
    past the last run it stays flat (what a family reached with less compute it has at
    any larger budget). NaN below the smallest x (within `rtol`): never extrapolated down.
    """
    at = np.atleast_1d(np.asarray(at, dtype=float))
    fx, fy, _ = _front(x, y, sel)
    out = np.full(at.shape, np.nan)
    if len(fx) == 0:
        return out
    inside = (at >= fx[0] / (1 + rtol)) & (at > 0)
    out[inside] = np.interp(np.log10(np.maximum(at[inside], fx[0])), np.log10(fx), fy)
    return out


def beyond_last(x: Sequence[float], at: Sequence[float] | float, rtol: float = RANGE_RTOL) -> np.ndarray:
    """True where the budget lies past the family's largest run (its best is held flat)."""
    at = np.atleast_1d(np.asarray(at, dtype=float))
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return at > (x.max() * (1 + rtol) if len(x) else np.inf)


EXACT, AT_MOST, AT_LEAST = 0.0, -1.0, 1.0  # kinds of compute_to_reach values


def reach(
    x: Sequence[float], y: Sequence[float], target: Sequence[float] | float,
    sel: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Least x at which the interpolated frontier first reaches `target`, and its kind:
    EXACT; AT_MOST the smallest run when that run already beats the target; AT_LEAST the
    largest run when no run reaches it. NaN (value and kind) for a NaN target."""
    target = np.atleast_1d(np.asarray(target, dtype=float))
    fx, fy, hi = _front(x, y, sel)
    val = np.full(target.shape, np.nan)
    kind = np.full(target.shape, np.nan)
    if len(fx) == 0:
        return val, kind
    lx = np.log10(fx)
    for j, t in enumerate(target):
        if not np.isfinite(t):
            continue
        above = np.flatnonzero(fy >= t)
        if len(above) == 0:
            val[j], kind[j] = hi, AT_LEAST
        elif above[0] == 0:
            val[j], kind[j] = fx[0], (EXACT if fy[0] == t else AT_MOST)
        else:
            i = above[0]
            frac = (t - fy[i - 1]) / (fy[i] - fy[i - 1])
            val[j], kind[j] = 10 ** (lx[i - 1] + frac * (lx[i] - lx[i - 1])), EXACT
    return val, kind


def compute_to_reach(
    x: Sequence[float], y: Sequence[float], target: Sequence[float] | float,
    sel: Sequence[float] | None = None,
) -> np.ndarray:
    """Least x at which the interpolated frontier reaches `target` y; NaN when the target
    is outside the frontier's y range (see `reach` for the bounds there)."""
    val, kind = reach(x, y, target, sel)
    return np.where(kind == EXACT, val, np.nan)


def compute_multiplier(
    x_need: Sequence[float], y_need: Sequence[float],
    x_ref: Sequence[float], y_ref: Sequence[float],
    budgets: Sequence[float] | float,
) -> np.ndarray:
    """How many times the budget family "need" spends to match family "ref"'s best accuracy
    at each budget: compute_need(acc_ref(budget)) / budget. >1: "need" is less efficient."""
    budgets = np.atleast_1d(np.asarray(budgets, dtype=float))
    acc_ref = best_at(x_ref, y_ref, budgets)
    return compute_to_reach(x_need, y_need, acc_ref) / budgets


def first_crossing(x: np.ndarray, d: np.ndarray) -> tuple[float, int]:
    """Where d(x) first changes sign (linear in log10 x between grid points), and how many
    sign changes there are; (NaN, 0) when it keeps one sign."""
    k = np.flatnonzero(np.isfinite(d) & (d != 0))
    if len(k) < 2:
        return np.nan, 0
    flips = np.flatnonzero(np.sign(d[k[:-1]]) != np.sign(d[k[1:]]))
    if len(flips) == 0:
        return np.nan, 0
    i, j = k[flips[0]], k[flips[0] + 1]
    lx = np.log10(x)
    return float(10 ** (lx[i] + d[i] / (d[i] - d[j]) * (lx[j] - lx[i]))), len(flips)


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
    replicates: no interval, never a zero-width one.
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
        out += s / np.sqrt(n) * rng.standard_t(dof, size=(n_boot, len(values)))
    return out


def _ci(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column; NaN where under half of the replicates are finite."""
    finite = np.isfinite(samples)
    enough = finite.sum(axis=0) >= max(1, samples.shape[0] // 2)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    with np.errstate(all="ignore"):
        s = np.where(finite, samples, np.nan)
        lo_hi = np.full((2, samples.shape[1]), np.nan)
        if samples.shape[0] and enough.any():
            lo_hi[:, enough] = np.nanpercentile(s[:, enough], q, axis=0)
    return lo_hi[0], lo_hi[1]


Z95 = 1.96  # two-sided 95% normal quantile: the test-set noise band is +-Z95 standard errors
CROSS_GRID = 64  # budgets (log-spaced over two families' shared range) searched for a sign change


def binomial_se(p: np.ndarray | float, n: np.ndarray | float) -> np.ndarray:
    """Standard error of an accuracy p measured on n test images (NaN without n)."""
    p, n = np.asarray(p, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(all="ignore"):
        return np.where(n > 0, np.sqrt(p * (1 - p) / n), np.nan)


def called(diff: float, lo: float, hi: float, se: float) -> bool:
    """A difference is called only when it lies outside its seed CI (when there is one) and
    outside +-1.96 test-set standard errors (when the test size is known), and when at
    least one of the two exists; otherwise it is within noise."""
    has_ci, has_se = np.isfinite(lo) and np.isfinite(hi), np.isfinite(se)
    if not (has_ci or has_se) or not np.isfinite(diff):
        return False
    if has_ci and lo <= 0 <= hi:
        return False
    return not (has_se and abs(diff) <= Z95 * se)


@dataclass
class EqualCompute:
    budgets: np.ndarray
    best: pd.DataFrame  # budget, family, acc, acc_lo, acc_hi, min_seeds, beyond, n_test
    pairs: pd.DataFrame  # budget, family_a, family_b, acc_a, acc_b, diff (+CI, se, called),
    #   multiplier (exact, +CI), mult_kind ("=", "<=", ">=", "" unknown) and mult_bound
    bootstrapped: bool  # False when no point has two seeds (no CI possible)
    crossovers: pd.DataFrame = field(default_factory=pd.DataFrame)  # per pair: first sign change
    spread: dict[str, str] = field(default_factory=dict)  # family -> "own", "pooled" or "none"
    last_run: dict[str, float] = field(default_factory=dict)  # family -> its largest compute
    selected_on: str = "test"  # "validation" when frontiers were chosen on val_top1


def _mult_kind(kind: float, ref_beyond: bool) -> str:
    """A budget past the reference family's last run holds its accuracy flat, a lower bound
    on what it would reach: the multiplier is then at least the value, or unknown."""
    if not np.isfinite(kind):
        return ""
    if ref_beyond:
        return "" if kind == AT_MOST else ">="
    return {EXACT: "=", AT_MOST: "<=", AT_LEAST: ">="}[kind]


def equal_compute(
    points: pd.DataFrame,
    budgets: Sequence[float] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    x: str = "compute",
) -> EqualCompute:
    """The equal-compute comparison of every family pair on seed-aggregated `points`
    (columns family, `x`, acc, acc_values; `sel` and `selected_on` when aggregate_points made
    them). Pairs are ordered ViT, Hybrid, BiT, ... and `multiplier` is
    compute_b(acc_a(budget)) / budget: how many times the budget family b needs to match
    family a (paper: BiT needs 2-4x ViT's compute). Frontiers are chosen on validation
    accuracy when every point has it, and show test accuracy."""
    rng = np.random.default_rng(seed)
    budgets = np.asarray(budget_grid(points, x) if budgets is None else budgets, dtype=float)
    fams = families_in(points)
    on_val = "selected_on" in points and bool((points["selected_on"] == "validation").all()) \
        and len(points) > 0
    pooled = seed_spread(list(points["acc_values"]))
    data, boot, spread, last = {}, {}, {}, {}
    for f in fams:
        d = points[(points["family"] == f) & points[x].notna() & points["acc"].notna()]
        sel = d["sel"].to_numpy(float) if on_val else None
        n_test = pd.to_numeric(d.get("n_test", pd.Series(np.nan, index=d.index)), errors="coerce")
        data[f] = (d[x].to_numpy(float), d["acc"].to_numpy(float), int(d["n_seeds"].min()), sel,
                   float(n_test.min()) if n_test.notna().any() else np.nan)
        own = seed_spread(list(d["acc_values"]))[1]
        spread[f] = "own" if own else ("pooled" if pooled[1] else "none")
        boot[f] = bootstrap_means(list(d["acc_values"]), max(n_boot, 0), rng, fallback=pooled)
        last[f] = float(d[x].max())
    bootstrapped = n_boot > 0 and bool(pooled[1])

    def curve(f: str, at: np.ndarray, rep: np.ndarray | None = None) -> np.ndarray:
        fx, fy, _, sel, _ = data[f]
        return best_at(fx, fy if rep is None else rep, at, sel=sel)

    best_rows, boot_best = [], {}
    for f in fams:
        fx, fy, nmin, sel, nt = data[f]
        acc = curve(f, budgets)
        reps = np.array([curve(f, budgets, r) for r in boot[f]]).reshape(-1, len(budgets))
        boot_best[f] = reps
        lo, hi = _ci(reps, level) if bootstrapped else (np.full_like(acc, np.nan),) * 2
        for b, a, lo_, hi_, bey in zip(budgets, acc, lo, hi, beyond_last(fx, budgets)):
            best_rows.append(dict(budget=b, family=f, acc=a, acc_lo=lo_, acc_hi=hi_,
                                  min_seeds=nmin, beyond=bool(bey), n_test=nt))
    best = pd.DataFrame(best_rows, columns=["budget", "family", "acc", "acc_lo", "acc_hi",
                                            "min_seeds", "beyond", "n_test"])

    pair_rows, cross_rows = [], []
    for fa, fb in combinations(fams, 2):
        xa, ya, na, sa, nta = data[fa]
        xb, yb, nb, sb, ntb = data[fb]
        acc_a, acc_b = curve(fa, budgets), curve(fb, budgets)
        bey_a, bey_b = beyond_last(xa, budgets), beyond_last(xb, budgets)
        need, kind = reach(xb, yb, acc_a, sel=sb)
        mult = need / budgets
        se = np.sqrt(binomial_se(acc_a, nta) ** 2 + binomial_se(acc_b, ntb) ** 2)
        diff_boot = boot_best[fa] - boot_best[fb]
        mult_boot = []
        for ra, rb in zip(boot_best[fa], boot[fb]):
            v, k = reach(xb, rb, ra, sel=sb)
            mult_boot.append(np.where(k == EXACT, v, np.nan) / budgets)
        mult_boot = np.array(mult_boot).reshape(-1, len(budgets))
        if bootstrapped:
            d_lo, d_hi = _ci(diff_boot, level)
            m_lo, m_hi = _ci(mult_boot, level)
        else:
            d_lo = d_hi = m_lo = m_hi = np.full(len(budgets), np.nan)
        for i, b in enumerate(budgets):
            both = np.isfinite(acc_a[i]) and np.isfinite(acc_b[i])
            mk = _mult_kind(kind[i], bool(bey_a[i]))
            lo_, hi_ = (d_lo[i], d_hi[i]) if both else (np.nan, np.nan)
            diff = acc_a[i] - acc_b[i]
            pair_rows.append(dict(
                budget=b, family_a=fa, family_b=fb, acc_a=acc_a[i], acc_b=acc_b[i],
                diff=diff, diff_lo=lo_, diff_hi=hi_, se_test=se[i],
                called=both and called(diff, lo_, hi_, se[i]),
                a_beyond=bool(bey_a[i]), b_beyond=bool(bey_b[i]),
                multiplier=mult[i] if mk == "=" else np.nan, mult_kind=mk,
                mult_bound=mult[i] if mk in ("<=", ">=") else np.nan,
                mult_lo=m_lo[i] if mk == "=" else np.nan,
                mult_hi=m_hi[i] if mk == "=" else np.nan,
                min_seeds_a=na, min_seeds_b=nb,
            ))
        cross_rows.append(_crossover(fa, fb, data, boot, bootstrapped, level, curve))
    cols = ["budget", "family_a", "family_b", "acc_a", "acc_b", "diff", "diff_lo", "diff_hi",
            "se_test", "called", "a_beyond", "b_beyond", "multiplier", "mult_kind", "mult_bound", "mult_lo",
            "mult_hi", "min_seeds_a", "min_seeds_b"]
    pairs = pd.DataFrame(pair_rows, columns=cols)
    crossovers = pd.DataFrame(cross_rows, columns=["family_a", "family_b", "crossover",
                                                   "cross_lo", "cross_hi", "cross_frac",
                                                   "n_changes"])
    return EqualCompute(budgets=budgets, best=best, pairs=pairs, bootstrapped=bootstrapped,
                        crossovers=crossovers, spread=spread, last_run=last,
                        selected_on="validation" if on_val else "test")


def _crossover(fa, fb, data, boot, bootstrapped, level, curve) -> dict:
    """The compute where the fa - fb difference first changes sign, searched on a fine grid
    over the compute range both families measured (not where one is held flat), with a
    bootstrap CI over seeds and the share of replicates that change sign there at all."""
    row = dict(family_a=fa, family_b=fb, crossover=np.nan, cross_lo=np.nan, cross_hi=np.nan,
               cross_frac=np.nan, n_changes=0)
    xa, xb = data[fa][0], data[fb][0]
    lo = max(np.nanmin(xa), np.nanmin(xb)) if len(xa) and len(xb) else np.nan
    hi = min(np.nanmax(xa), np.nanmax(xb)) if len(xa) and len(xb) else np.nan
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        return row
    grid = np.geomspace(lo, hi, CROSS_GRID)
    row["crossover"], row["n_changes"] = first_crossing(grid, curve(fa, grid) - curve(fb, grid))
    if bootstrapped and len(boot[fa]) and np.isfinite(boot[fa]).all() and np.isfinite(boot[fb]).all():
        reps = np.array([first_crossing(grid, curve(fa, grid, ra) - curve(fb, grid, rb))[0]
                         for ra, rb in zip(boot[fa], boot[fb])])
        ok = np.isfinite(reps)
        row["cross_frac"] = float(ok.mean())
        if ok.mean() >= 0.5:
            q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
            row["cross_lo"], row["cross_hi"] = (float(v) for v in np.percentile(reps[ok], q))
    return row
