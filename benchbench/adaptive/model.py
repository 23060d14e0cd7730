"""The planner's surrogate: each family's test top-1 against training compute, with its
uncertainty, cheap enough to score thousands of candidate runs per round.

Per family, error E(x) = exp(alpha - exp(beta) * ln10 * (x - x_ref)) + sigmoid(gamma), with
x = log10(train FLOPs): the saturating power law E = a C^-b + c of the paper's Figure 5 (and
the report's fits) with b = exp(beta) > 0 and a floor c in (0, 1). Unlike the report's
four-parameter fit (which needs four distinct computes per family), this one has weak
Gaussian priors, so it gives a curve and a band from the first three points; the band is the
Laplace approximation (Gauss-Newton Hessian of the MAP fit plus the prior precision), which
makes the value of one more run a closed form (Sherman-Morrison, see design.py).
Accuracies are fractions; the noise sd `sigma` is the seeds' pooled sd where rows repeat a
setting, floored by the fit's residual scatter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit, logit

LN10 = float(np.log(10.0))
N_PARAMS = 3  # alpha, beta, gamma per family
PRIOR_B = 0.3  # exponent b: Figure 5-like curves have b of 0.05-0.5 per unit ln C
PRIOR_SD = np.array([2.0, 1.0, 2.0])  # alpha (ln a), beta (ln b), gamma (logit c): weak
SIGMA_DEFAULT = 0.005  # half a point of top-1: the noise before any seed is repeated
SIGMA_FLOOR = 0.001


MAX_EXP = 50.0  # exp() arguments are capped: an optimiser's trial step must not overflow


def _term(alpha: float, b: float, x: np.ndarray, x_ref: float) -> np.ndarray:
    return np.exp(np.minimum(alpha - b * LN10 * (x - x_ref), MAX_EXP))


def error_curve(theta: np.ndarray, x: np.ndarray, x_ref: float) -> np.ndarray:
    alpha, beta, gamma = theta
    return _term(alpha, np.exp(min(beta, MAX_EXP / 10)), x, x_ref) + expit(gamma)


def error_jacobian(theta: np.ndarray, x: np.ndarray, x_ref: float) -> np.ndarray:
    """dE/dtheta at each x: shape (len(x), 3)."""
    alpha, beta, gamma = theta
    b = np.exp(min(beta, MAX_EXP / 10))
    t = _term(alpha, b, x, x_ref)
    c = expit(gamma)
    return np.column_stack([t, -t * b * LN10 * (x - x_ref), np.full_like(t, c * (1 - c))])


@dataclass
class Posterior:
    """The fitted families: `theta[f]` (3,), the joint covariance `cov` over all families'
    parameters (block-diagonal: families are fitted independently), and the noise sd."""

    families: list[str]
    theta: dict[str, np.ndarray]
    cov: np.ndarray
    sigma: float
    x_ref: float
    n_obs: dict[str, int]

    def block(self, family: str) -> slice:
        i = self.families.index(family)
        return slice(N_PARAMS * i, N_PARAMS * (i + 1))

    def grad(self, family: str, x: np.ndarray | float) -> np.ndarray:
        """d top1 / d(all params) at x: shape (len(x), P); top1 = 1 - E."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        g = np.zeros((len(x), len(self.cov)))
        g[:, self.block(family)] = -error_jacobian(self.theta[family], x, self.x_ref)
        return g

    def mean(self, family: str, x: np.ndarray | float) -> np.ndarray:
        x = np.atleast_1d(np.asarray(x, dtype=float))
        return 1.0 - error_curve(self.theta[family], x, self.x_ref)

    def sd(self, family: str, x: np.ndarray | float, cov: np.ndarray | None = None) -> np.ndarray:
        """The sd of the curve (not of one run: add sigma^2 for a run's prediction band)."""
        g = self.grad(family, x)
        c = self.cov if cov is None else cov
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", g, c, g), 0.0))


def pooled_sd(groups: list[np.ndarray]) -> float | None:
    """The seeds' pooled sd (ddof=1) over groups with two or more values; None without any."""
    num = sum(float(((g - g.mean()) ** 2).sum()) for g in groups if len(g) > 1)
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    return float(np.sqrt(num / dof)) if dof else None


def _fit_family(x: np.ndarray, y: np.ndarray, sigma: float, x_ref: float
                ) -> tuple[np.ndarray, np.ndarray, float]:
    """MAP theta, its Laplace covariance, and the residual sum of squares (accuracy units)."""
    err = np.clip(1.0 - y, 1e-4, 1 - 1e-4)
    if not len(x):  # no run yet: the prior, centred on a 20%-error curve with a 5% floor
        return np.array([np.log(0.15), np.log(PRIOR_B), logit(0.05)]), np.diag(PRIOR_SD ** 2), 0.0
    floor = 0.5 * float(err.min())
    mu = np.array([np.log(max(float(err.mean()) - floor, 1e-3)), np.log(PRIOR_B), logit(floor)])

    def resid(th: np.ndarray) -> np.ndarray:
        return np.concatenate([(error_curve(th, x, x_ref) - err) / sigma, (th - mu) / PRIOR_SD])

    def jac(th: np.ndarray) -> np.ndarray:
        return np.vstack([error_jacobian(th, x, x_ref) / sigma, np.diag(1 / PRIOR_SD)])

    best = None
    for start in (mu, mu + np.array([0.0, 0.7, 0.0]), mu + np.array([0.0, -0.7, -1.0])):
        r = least_squares(resid, start, jac=jac, method="lm" if len(x) >= 3 else "trf")
        if best is None or r.cost < best.cost:
            best = r
    theta = best.x
    jd = error_jacobian(theta, x, x_ref)
    hess = jd.T @ jd / sigma ** 2 + np.diag(1 / PRIOR_SD ** 2)
    rss = float(((error_curve(theta, x, x_ref) - err) ** 2).sum())
    return theta, np.linalg.inv(hess), rss


def fit(obs: dict[str, tuple[np.ndarray, np.ndarray]], families: list[str], x_ref: float,
        replicates: list[np.ndarray] | None = None) -> Posterior:
    """Fit every family of `families` to its observations obs[f] = (x, top1) (one entry per
    run; a family with none keeps its prior). `replicates`: top-1 groups of repeated seeds."""
    seed_sd = pooled_sd(replicates or [])
    sigma = max(seed_sd if seed_sd is not None else SIGMA_DEFAULT, SIGMA_FLOOR)

    def fit_all(sigma: float) -> tuple[dict[str, np.ndarray], list[np.ndarray], float]:
        thetas, covs, rss, dof = {}, [], 0.0, 0
        for f in families:
            x, y = (np.asarray(v, dtype=float) for v in obs.get(f, ((), ())))
            thetas[f], cov, r = _fit_family(x, y, sigma, x_ref)
            covs.append(cov)
            rss, dof = rss + r, dof + max(len(x) - N_PARAMS, 0)
        return thetas, covs, float(np.sqrt(rss / dof)) if dof >= 2 else 0.0

    thetas, covs, scatter = fit_all(sigma)
    if scatter > sigma * 1.05:  # the curve misses the points by more than the seeds vary
        sigma = scatter
        thetas, covs, _ = fit_all(sigma)
    cov = np.zeros((N_PARAMS * len(families),) * 2)
    for i, c in enumerate(covs):
        cov[N_PARAMS * i:N_PARAMS * (i + 1), N_PARAMS * i:N_PARAMS * (i + 1)] = c
    n_obs = {f: len(obs.get(f, ((), ()))[0]) for f in families}
    return Posterior(list(families), thetas, cov, float(sigma), float(x_ref), n_obs)
