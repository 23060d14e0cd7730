"""Equal-compute comparison of families: best accuracy at each budget (interpolated on the
family's frontier in log-compute, never extrapolated), pairwise differences with bootstrap
confidence intervals over seeds, and the compute multiplier (paper section 4.4: ViT needs
2-4x less compute than BiT for the same accuracy).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


def _front(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray, float]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[ok], y[ok]
    if len(x) == 0:
        return np.array([]), np.array([]), np.nan
    f = pareto_front(x, y)
    return x[f], y[f], float(x.max())


def best_at(
    x: Sequence[float], y: Sequence[float], at: Sequence[float] | float, rtol: float = RANGE_RTOL
) -> np.ndarray:
    """Best y reachable with at most `at` x (e.g. accuracy within a compute budget).

    Linear interpolation in log10(x) between frontier points; beyond the last frontier
    point it stays flat up to the largest x observed. NaN outside [min x, max x] of the
    data (within `rtol`): never extrapolated.
    """
    at = np.atleast_1d(np.asarray(at, dtype=float))
    fx, fy, hi = _front(x, y)
    out = np.full(at.shape, np.nan)
    if len(fx) == 0:
        return out
    lo = fx[0]
    inside = (at >= lo / (1 + rtol)) & (at <= hi * (1 + rtol)) & (at > 0)
    a = np.clip(at[inside], lo, hi)
    out[inside] = np.interp(np.log10(a), np.log10(fx), fy)
    return out


def compute_to_reach(
    x: Sequence[float], y: Sequence[float], target: Sequence[float] | float
) -> np.ndarray:
    """Least x at which the interpolated frontier reaches `target` y; NaN when the target
    is outside the frontier's y range (not extrapolated)."""
    target = np.atleast_1d(np.asarray(target, dtype=float))
    fx, fy, _ = _front(x, y)
    out = np.full(target.shape, np.nan)
    if len(fx) == 0:
        return out
    inside = np.isfinite(target) & (target >= fy[0]) & (target <= fy[-1])
    out[inside] = 10 ** np.interp(target[inside], fy, np.log10(fx))
    return out


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


def bootstrap_means(values: Sequence[tuple], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_points) replicates of each point's seed mean.

    Parametric bootstrap over seeds: mean_i + s/sqrt(n_i) * t(dof), with the seed spread s
    pooled over the points given (one family), so 2-3 seeds per point still give an honest
    interval. Resampling 2-3 seeds with replacement has too few distinct outcomes: its 95%
    interval covered the truth in ~73% of trials with 3 seeds. With no point of two or more
    seeds there is no spread to draw from and the means stay fixed.
    """
    means = np.array([np.mean(v) for v in values], dtype=float)
    out = np.tile(means, (n_boot, 1))
    s, dof = seed_spread(values)
    if dof and n_boot:
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


@dataclass
class EqualCompute:
    budgets: np.ndarray
    best: pd.DataFrame  # budget, family, acc, acc_lo, acc_hi, min_seeds
    pairs: pd.DataFrame  # budget, family_a, family_b, acc_a, acc_b, diff (+CI), multiplier (+CI)
    bootstrapped: bool  # False when every point has a single seed (no CI possible)


def equal_compute(
    points: pd.DataFrame,
    budgets: Sequence[float] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    x: str = "compute",
) -> EqualCompute:
    """The equal-compute comparison of every family pair on seed-aggregated `points`
    (columns family, `x`, acc, acc_values). Pairs are ordered ViT, Hybrid, BiT, ... and
    `multiplier` is compute_b(acc_a(budget)) / budget: how many times the budget family b
    needs to match family a (paper: BiT needs 2-4x ViT's compute)."""
    rng = np.random.default_rng(seed)
    budgets = np.asarray(budget_grid(points, x) if budgets is None else budgets, dtype=float)
    fams = families_in(points)
    data, boot = {}, {}
    bootstrapped = False
    for f in fams:
        d = points[(points["family"] == f) & points[x].notna() & points["acc"].notna()]
        data[f] = (d[x].to_numpy(float), d["acc"].to_numpy(float), int(d["n_seeds"].min()))
        if n_boot > 0 and (d["n_seeds"] > 1).any():
            bootstrapped = True
        boot[f] = bootstrap_means(list(d["acc_values"]), max(n_boot, 0), rng)

    best_rows = []
    boot_best = {}
    for f in fams:
        fx, fy, nmin = data[f]
        acc = best_at(fx, fy, budgets)
        reps = np.array([best_at(fx, r, budgets) for r in boot[f]]).reshape(-1, len(budgets))
        boot_best[f] = reps
        lo, hi = _ci(reps, level) if bootstrapped else (np.full_like(acc, np.nan),) * 2
        for b, a, lo_, hi_ in zip(budgets, acc, lo, hi):
            best_rows.append(dict(budget=b, family=f, acc=a, acc_lo=lo_, acc_hi=hi_, min_seeds=nmin))
    best = pd.DataFrame(best_rows, columns=["budget", "family", "acc", "acc_lo", "acc_hi", "min_seeds"])

    pair_rows = []
    for fa, fb in combinations(fams, 2):
        xa, ya, na = data[fa]
        xb, yb, nb = data[fb]
        acc_a, acc_b = best_at(xa, ya, budgets), best_at(xb, yb, budgets)
        mult = compute_to_reach(xb, yb, acc_a) / budgets
        diff_boot = boot_best[fa] - boot_best[fb]
        mult_boot = np.array([
            compute_to_reach(xb, rb, ra) / budgets for ra, rb in zip(boot_best[fa], boot[fb])
        ]).reshape(-1, len(budgets))
        if bootstrapped:
            d_lo, d_hi = _ci(diff_boot, level)
            m_lo, m_hi = _ci(mult_boot, level)
        else:
            d_lo = d_hi = m_lo = m_hi = np.full(len(budgets), np.nan)
        for i, b in enumerate(budgets):
            both = np.isfinite(acc_a[i]) and np.isfinite(acc_b[i])
            pair_rows.append(dict(
                budget=b, family_a=fa, family_b=fb, acc_a=acc_a[i], acc_b=acc_b[i],
                diff=acc_a[i] - acc_b[i],
                diff_lo=d_lo[i] if both else np.nan, diff_hi=d_hi[i] if both else np.nan,
                multiplier=mult[i],
                mult_lo=m_lo[i] if np.isfinite(mult[i]) else np.nan,
                mult_hi=m_hi[i] if np.isfinite(mult[i]) else np.nan,
                min_seeds_a=na, min_seeds_b=nb,
            ))
    cols = ["budget", "family_a", "family_b", "acc_a", "acc_b", "diff", "diff_lo", "diff_hi",
            "multiplier", "mult_lo", "mult_hi", "min_seeds_a", "min_seeds_b"]
    pairs = pd.DataFrame(pair_rows, columns=cols)
    return EqualCompute(budgets=budgets, best=best, pairs=pairs, bootstrapped=bootstrapped)
