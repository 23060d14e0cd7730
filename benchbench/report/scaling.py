"""Scaling-law fits: error E = a (x + d)^-b + c against compute or dataset size, per family.

Fitted on the family's frontier (compute) or envelope (best model per dataset size), in log
space with bounds and several starts; uncertainty from a bootstrap over seeds (or over
residuals when every point has one seed); a held-out check predicts the largest x from the
others. A fit that should not be trusted says why in `reasons`, it is never dropped silently.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from benchbench.report.compare import bootstrap_means
from benchbench.report.load import families_in
from benchbench.report.pareto import pareto_front

N_PARAMS = 4
MIN_DISTINCT_X = 4  # one per parameter
HELDOUT_MAX_REL_ERR = 0.10  # prediction of the largest x off by more than 10% of its error
B_BOUNDS = (1e-3, 3.0)
D_MAX = 1e3  # in units of the smallest x
A_BOUNDS = (1e-8, 1e3)


def saturating_power_law(x, a, b, c, d):
    """E(x) = a (x + d)^-b + c."""
    return a * (np.asarray(x, dtype=float) + d) ** (-b) + c


@dataclass
class PowerLawFit:
    """A fit in normalised units xn = x / x0 (keeps the optimiser well conditioned)."""

    x0: float
    params: np.ndarray  # a, b, c, d of E = a (xn + d)^-b + c; NaN when not fitted
    n_points: int
    n_distinct: int
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, N_PARAMS)))
    heldout_x: float = np.nan
    heldout_obs: float = np.nan
    heldout_pred: float = np.nan
    rmse_log: float = np.nan
    x_range: tuple[float, float] = (np.nan, np.nan)
    reasons: list[str] = field(default_factory=list)

    @property
    def fitted(self) -> bool:
        return bool(np.all(np.isfinite(self.params)))

    @property
    def trustworthy(self) -> bool:
        return self.fitted and not self.reasons

    @property
    def a(self) -> float:
        """`a` in original x units: a' x0^b."""
        return float(self.params[0] * self.x0 ** self.params[1])

    @property
    def b(self) -> float:
        return float(self.params[1])

    @property
    def c(self) -> float:
        return float(self.params[2])

    @property
    def d(self) -> float:
        """`d` in original x units."""
        return float(self.params[3] * self.x0)

    def predict(self, x: Sequence[float] | float) -> np.ndarray:
        return saturating_power_law(np.asarray(x, dtype=float) / self.x0, *self.params)

    def ci(self, name: str, level: float = 0.95) -> tuple[float, float]:
        j = "abcd".index(name)
        if len(self.boot) < 10:
            return (np.nan, np.nan)
        vals = self.boot[:, j]
        if name == "a":
            vals = vals * self.x0 ** self.boot[:, 1]
        elif name == "d":
            vals = vals * self.x0
        lo, hi = np.percentile(vals, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
        return float(lo), float(hi)

    def band(self, x: Sequence[float], level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=float)
        if len(self.boot) < 10:
            return np.full(x.shape, np.nan), np.full(x.shape, np.nan)
        preds = np.array([saturating_power_law(x / self.x0, *p) for p in self.boot])
        lo, hi = np.percentile(preds, [(1 - level) / 2 * 100, (1 + level) / 2 * 100], axis=0)
        return lo, hi

    @property
    def heldout_rel_err(self) -> float:
        return float(abs(self.heldout_pred - self.heldout_obs) / self.heldout_obs)


def _bounds(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([A_BOUNDS[0], B_BOUNDS[0], 0.0, 0.0])
    hi = np.array([A_BOUNDS[1], B_BOUNDS[1], 0.999 * float(e.min()), D_MAX])
    return lo, hi


def _solve(xn: np.ndarray, e: np.ndarray, starts: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
    lo, hi = _bounds(e)
    loge = np.log(e)

    def resid(p):
        with np.errstate(all="ignore"):
            m = saturating_power_law(xn, *p)
        return np.log(np.maximum(m, 1e-12)) - loge

    def jac(p):  # analytic: finite differences made the fits the slowest part of a report
        a, b, c, d = p
        with np.errstate(all="ignore"):
            xd = xn + d
            pw = xd ** (-b)
            m = np.maximum(a * pw + c, 1e-12)
            cols = [pw, -a * pw * np.log(xd), np.ones_like(xn), -a * b * pw / xd]
        return np.column_stack(cols) / m[:, None]

    best, best_cost = np.full(N_PARAMS, np.nan), np.inf
    for p0 in starts:
        p0 = np.clip(p0, lo + 1e-12, hi - 1e-12 * np.maximum(1.0, np.abs(hi)))
        try:
            r = least_squares(resid, p0, jac=jac, bounds=(lo, hi), method="trf", max_nfev=2000)
        except ValueError:
            continue
        if r.cost < best_cost:
            best, best_cost = r.x, r.cost
    return best, float(np.sqrt(2 * best_cost / len(e))) if np.isfinite(best_cost) else np.nan


def _starts(xn: np.ndarray, e: np.ndarray) -> list[np.ndarray]:
    emin = float(e.min())
    i0 = int(np.argmin(xn))
    out = []
    for b0, cf, d0 in product((0.1, 0.3, 0.7), (0.0, 0.5, 0.9), (0.0, 1.0)):
        c0 = cf * emin
        a0 = max(float(e[i0]) - c0, 1e-6) * (xn[i0] + d0) ** b0
        out.append(np.array([a0, b0, c0, d0]))
    return out


def fit_power_law(
    x: Sequence[float],
    values: Sequence[Sequence[float]],
    n_boot: int = 200,
    seed: int = 0,
    heldout: bool = True,
) -> PowerLawFit:
    """Fit E = a (x + d)^-b + c to points at `x`, each with the error of one or more seeds
    (`values[i]`, fractions in (0, 1]). Point means are fitted with equal weight."""
    x = np.asarray(x, dtype=float)
    vals = [np.clip(np.asarray(v, dtype=float), 1e-6, None) for v in values]
    keep = np.isfinite(x) & (x > 0) & np.array([len(v) > 0 for v in vals], dtype=bool)
    x = x[keep]
    vals = [v for v, k in zip(vals, keep) if k]
    order = np.argsort(x, kind="stable")
    x = x[order]
    vals = [vals[i] for i in order]
    e = np.array([v.mean() for v in vals])
    n_distinct = len(np.unique(x))
    x0 = float(x.min()) if len(x) else 1.0
    fit = PowerLawFit(x0=x0, params=np.full(N_PARAMS, np.nan), n_points=len(x),
                      n_distinct=n_distinct,
                      x_range=(float(x.min()), float(x.max())) if len(x) else (np.nan, np.nan))
    if n_distinct < MIN_DISTINCT_X:
        fit.reasons.append(f"too few points ({n_distinct} distinct x < {MIN_DISTINCT_X}): not fitted")
        return fit
    xn = x / x0
    fit.params, fit.rmse_log = _solve(xn, e, _starts(xn, e))
    if not fit.fitted:
        fit.reasons.append("the optimiser did not converge")
        return fit

    lo, hi = _bounds(e)
    at_bound = []
    for j, name in enumerate("abcd"):
        # c = 0 (no floor) and d = 0 (no offset) are answers, not failures of the fit
        low = name in "ab" and np.isclose(fit.params[j], lo[j], rtol=1e-3, atol=1e-9)
        if low or np.isclose(fit.params[j], hi[j], rtol=1e-3):
            at_bound.append(name)
    if at_bound:
        fit.reasons.append(f"parameter(s) at a bound: {', '.join(at_bound)}")

    rng = np.random.default_rng(seed)
    if n_boot > 0:
        fit.boot = _bootstrap(xn, vals, fit.params, n_boot, rng)
        if len(fit.boot) < 10:
            fit.reasons.append("no uncertainty: one seed per point and no spare degrees of freedom")
        else:
            b_lo, b_hi = fit.ci("b")
            if b_hi - b_lo > fit.b:
                fit.reasons.append(f"exponent b={fit.b:.2g} has a 95% CI [{b_lo:.2g}, {b_hi:.2g}] wider than itself")

    if heldout:
        last = x == x.max()
        if len(np.unique(x[~last])) >= MIN_DISTINCT_X:
            xs, es = xn[~last], e[~last]
            p, _ = _solve(xs, es, _starts(xs, es))
            fit.heldout_x = float(x.max())
            fit.heldout_obs = float(e[last].mean())
            fit.heldout_pred = float(saturating_power_law(xn[last][0], *p))
            if not np.isfinite(fit.heldout_pred):
                fit.reasons.append("held-out fit did not converge")
            elif fit.heldout_rel_err > HELDOUT_MAX_REL_ERR:
                fit.reasons.append(
                    f"held-out error {fit.heldout_rel_err:.0%} at the largest x "
                    f"(> {HELDOUT_MAX_REL_ERR:.0%})"
                )
        else:
            fit.reasons.append(
                f"no held-out check: needs {MIN_DISTINCT_X + 1} distinct x, has {n_distinct}"
            )
    return fit


def _bootstrap(
    xn: np.ndarray, vals: list[np.ndarray], params: np.ndarray, n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    n = len(xn)
    if any(len(v) > 1 for v in vals):
        reps = np.clip(bootstrap_means([tuple(v) for v in vals], n_boot, rng), 1e-6, None)
    elif n > N_PARAMS:
        pred = saturating_power_law(xn, *params)
        e = np.array([v.mean() for v in vals])
        r = (np.log(e) - np.log(pred)) * np.sqrt(n / (n - N_PARAMS))
        reps = pred * np.exp(r[rng.integers(0, n, size=(n_boot, n))])
    else:
        return np.empty((0, N_PARAMS))
    out = []
    for rep in reps:
        p, _ = _solve(xn, rep, [params])
        if np.all(np.isfinite(p)):
            out.append(p)
    return np.array(out).reshape(-1, N_PARAMS)


def _sel(points: pd.DataFrame) -> str:
    """What selection maximises: `sel` (validation accuracy, from aggregate_points) when the
    points carry it, else the test accuracy itself."""
    return "sel" if "sel" in points and points["sel"].notna().all() else "acc"


def frontier_points(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """The frontier of (x, accuracy) per family, chosen on validation accuracy when there is
    one: what a compute scaling law describes."""
    parts = []
    for _, d in points[points[x].notna()].groupby("family", sort=False):
        parts.append(d.iloc[pareto_front(d[x], d[_sel(d)])])
    return pd.concat(parts) if parts else points.iloc[:0]


def envelope_points(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per family and x, the point with the best mean accuracy, on validation when there is
    one (e.g. best model per dataset size, as in Figures 3/4)."""
    d = points[points[x].notna()]
    if d.empty:
        return d
    idx = d.groupby(["family", x], sort=False)[_sel(d)].idxmax()
    return d.loc[idx.to_numpy()]


def fit_families(
    points: pd.DataFrame, x: str, on: str = "frontier", n_boot: int = 200, seed: int = 0
) -> dict[str, PowerLawFit]:
    """One fit of error (1 - acc) against `x` per family, on its frontier or envelope."""
    sel = frontier_points(points, x) if on == "frontier" else envelope_points(points, x)
    fits = {}
    for i, f in enumerate(families_in(sel)):
        d = sel[sel["family"] == f]
        errs = [tuple(1.0 - np.asarray(v, dtype=float)) for v in d["acc_values"]]
        fits[f] = fit_power_law(d[x].to_numpy(float), errs, n_boot=n_boot, seed=seed + i)
    return fits


def fits_table(fits: dict[str, dict[str, PowerLawFit]]) -> pd.DataFrame:
    """Long table of fits: {axis name: {family: fit}} -> one row per (axis, family)."""
    rows = []
    for axis, per_family in fits.items():
        for fam, f in per_family.items():
            b_lo, b_hi = f.ci("b")
            c_lo, c_hi = f.ci("c")
            rows.append(dict(
                axis=axis, family=fam, n_points=f.n_points, n_distinct_x=f.n_distinct,
                x_min=f.x_range[0], x_max=f.x_range[1],
                a=f.a if f.fitted else np.nan, b=f.b if f.fitted else np.nan, b_lo=b_lo, b_hi=b_hi,
                c=f.c if f.fitted else np.nan, c_lo=c_lo, c_hi=c_hi,
                d=f.d if f.fitted else np.nan, rmse_log=f.rmse_log,
                heldout_x=f.heldout_x, heldout_obs=f.heldout_obs, heldout_pred=f.heldout_pred,
                trustworthy=f.trustworthy, reason="; ".join(f.reasons),
            ))
    return pd.DataFrame(rows)
