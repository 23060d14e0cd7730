"""Reading a family's compute frontier: the best accuracy within a budget (interpolated in
log-compute, held flat past the last run, never extrapolated below the first), the compute
to reach an accuracy (or a bound on it), and where a difference changes sign."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchbench.report.evidence import RANGE_RTOL
from benchbench.report.pareto import pareto_front


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
