"""What an equal-compute value rests on, and how sure a call on it can be: the basis of a
family's value at a budget (a run there, between two close runs, held flat past the last
run, or nothing), analytic intervals of interpolated seed means, family-wise (Holm) calls,
and low-discrepancy draws that keep bootstrap intervals stable across bootstrap seeds."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats
from scipy.stats import qmc

RUN_RTOL = 0.25  # a frontier run within +-25% of a budget is a run "at" that budget
INTERP_MAX_RATIO = 4.0  # interpolating between runs further apart than 4x in compute is a guess
RANGE_RTOL = 0.05  # a run asked for B FLOPs does whole steps: it lands up to ~5% off B
COMPARED = ("run", "interpolated")  # bases on which a difference may be stated in words
FAMILY_LEVEL = 0.95  # calls over the budgets of one pair hold at this family-wise level


def basis(fx: Sequence[float], at: Sequence[float]) -> list[str]:
    """Per budget, what a family's best accuracy there rests on, from its frontier runs
    `fx`: "run" (one within +-25%), "interpolated" (between two at most 4x apart), "held"
    (past the last: its best held flat; a larger run that did worse is no run at this
    budget of the model that would win it) or "none" (below the first, or in a wide gap)."""
    fx = np.sort(np.asarray(fx, dtype=float))
    fx = fx[np.isfinite(fx) & (fx > 0)]
    out = []
    for b in np.atleast_1d(np.asarray(at, dtype=float)):
        if not (len(fx) and np.isfinite(b) and b > 0):
            out.append("none")
        elif np.any(np.abs(fx - b) <= RUN_RTOL * b):
            out.append("run")
        elif b > fx[-1]:
            out.append("held")
        elif b < fx[0]:
            out.append("none")
        else:
            i = int(np.searchsorted(fx, b)) - 1
            out.append("interpolated" if fx[i + 1] / fx[i] <= INTERP_MAX_RATIO else "none")
    return out


def interp_weights(fx: np.ndarray, at: float, rtol: float = RANGE_RTOL) -> np.ndarray:
    """Weights w over the frontier points such that best_at(at) = w @ fy (linear in
    log-compute between frontier points, flat past the last); zeros below the first."""
    fx = np.asarray(fx, dtype=float)
    w = np.zeros(len(fx))
    if not len(fx) or not np.isfinite(at) or at < fx[0] / (1 + rtol):
        return w
    if at <= fx[0]:
        w[0] = 1.0
    elif at >= fx[-1]:
        w[-1] = 1.0
    else:
        i = int(np.searchsorted(fx, at, side="right")) - 1
        f = (np.log10(at) - np.log10(fx[i])) / (np.log10(fx[i + 1]) - np.log10(fx[i]))
        w[i], w[i + 1] = 1 - f, f
    return w


def welch_dof(parts: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variances [(var, dof), ...];
    a part with infinite dof (a known spread, test-set noise) adds nothing below."""
    num = sum(v for v, _ in parts) ** 2
    den = sum(v * v / d for v, d in parts if np.isfinite(d) and d > 0 and v > 0)
    return float(num / den) if den > 0 else np.inf


def t_quantile(level: float, dof: float) -> float:
    q = (1 + level) / 2
    return float(stats.norm.ppf(q) if not np.isfinite(dof) else stats.t.ppf(q, dof))


def p_value(diff: float, se: float, dof: float) -> float:
    """Two-sided p of diff / se against t(dof) (normal for infinite dof)."""
    if not (np.isfinite(diff) and np.isfinite(se) and se > 0):
        return np.nan
    z = abs(diff) / se
    return float(2 * (stats.norm.sf(z) if not np.isfinite(dof) else stats.t.sf(z, dof)))


def holm(p: Sequence[float], alpha: float = 1 - FAMILY_LEVEL) -> np.ndarray:
    """Holm's step-down rejections over the finite p-values (NaN: not tested, not rejected);
    the family-wise error rate over them is at most alpha."""
    p = np.asarray(p, dtype=float)
    out = np.zeros(len(p), dtype=bool)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    for k, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        if p[i] > alpha / (m - k):
            break
        out[i] = True
    return out


def t_draws(n: int, dofs: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """(n, len(dofs)) draws of t(dof) per column from scrambled Sobol points: their
    quantiles are much steadier across bootstrap seeds than plain random draws (a t with
    1-2 dof, as 2 seeds per point give, made 1000 plain draws' 95% intervals move by 40%)."""
    d = len(dofs)
    if n <= 0 or d == 0:
        return np.zeros((max(n, 0), d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n not a power of 2: balance is slightly off, still fine
        u = qmc.Sobol(d, scramble=True, seed=rng).random(n)
    u = np.clip(u, 1e-12, 1 - 1e-12)
    return np.column_stack([stats.t.ppf(u[:, j], dofs[j]) if np.isfinite(dofs[j])
                            else stats.norm.ppf(u[:, j]) for j in range(d)])


STABLE_FRAC = 0.05  # halves of the replicates whose ends differ by more than 5% of the width:
# the interval cannot be estimated from them (its ends would move with the bootstrap seed)
MIN_REPLICATES = 16384  # multiplier and crossover intervals: enough Sobol draws to be stable


def stable_ci(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column, kept only where the two halves of the replicates
    give ends within STABLE_FRAC of the width of each other (else NaN: it cannot be
    estimated from these replicates), and where at least half the replicates are finite."""
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    n, k = samples.shape if samples.ndim == 2 else (0, 0)
    lo, hi = np.full(k, np.nan), np.full(k, np.nan)
    if n < 20:
        return lo, hi
    h = n // 2
    for j in range(k):
        s = samples[:, j]
        ok = np.isfinite(s)
        if ok.sum() < max(1, n // 2):
            continue
        a, b = s[:h][ok[:h]], s[h:][ok[h:]]
        if len(a) < 10 or len(b) < 10:
            continue
        full = np.percentile(s[ok], q)
        width = full[1] - full[0]
        ha, hb = np.percentile(a, q), np.percentile(b, q)
        if width <= 0 or np.max(np.abs(ha - hb)) > STABLE_FRAC * width:
            continue
        lo[j], hi[j] = full
    return lo, hi
