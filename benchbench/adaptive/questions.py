"""The questions an adaptive sweep answers (`study.question`), each as (a) its answer with a
95% interval from the surrogate and (b) the rows g whose variances g' Cov g sum to what the
next runs should shrink.

- crossover: where the ViT-CNN difference d(x) = top1_A(x) - top1_B(x) changes sign, x =
  log10(train FLOPs), over the computes where both families have runs (never one family's
  curve extrapolated against the other's runs). Its interval is the set of computes where the sign is not known (|d| <
  1.96 sd(d)), in decades; at a single crossing that is the delta-method interval of the
  crossing. It also gives the sign at each target budget (+1 A leads, -1 B leads, 0 unknown).
- frontier: each family's top-1 at the target budgets inside the candidates' range.
- extrapolate: each family's top-1 at target budgets beyond it (study.targets required).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchbench.adaptive.model import Posterior
from benchbench.errors import ConfigError

QUESTIONS = ("crossover", "frontier", "extrapolate")
Z95 = 1.959964
N_GRID = 241  # where the crossover's sign is checked: 0.0125 decade steps over 3 decades
MAX_ROWS = 60  # objective rows kept (evenly thinned): scoring cost, not accuracy


@dataclass
class Answer:
    question: str
    estimate: float | None  # crossover: log10 FLOPs of the first crossing; else None
    ci: tuple[float, float] | None  # crossover: where the sign is unknown; else None
    width: float  # crossover: decades of unknown sign; frontier: widest 95% CI in points
    unit: str
    signs: dict[float, int] = field(default_factory=dict)  # target log10 FLOPs -> +1/-1/0
    values: dict[str, dict[float, tuple[float, float, float]]] = field(default_factory=dict)
    undetermined: bool = False  # crossover: the sign is unknown at every target budget

    def summary(self) -> str:
        if self.question == "crossover":
            where = ("no crossing in the range" if self.estimate is None
                     else f"crossing at {10 ** self.estimate:.3g} FLOPs")
            ci = ("" if self.ci is None else
                  f"; sign unknown over {10 ** self.ci[0]:.3g}-{10 ** self.ci[1]:.3g} FLOPs")
            return f"{where}{ci} ({self.width:.2f} decades)"
        return f"widest 95% CI {self.width:.2f} points at the targets"

    def to_json(self) -> dict[str, Any]:
        return {"question": self.question, "estimate": self.estimate,
                "ci": list(self.ci) if self.ci else None, "width": round(self.width, 4),
                "unit": self.unit, "signs": {f"{k:.4f}": v for k, v in self.signs.items()},
                "summary": self.summary()}


@dataclass
class Question:
    name: str
    families: list[str]  # crossover: [A, B] (A - B); else the families to map
    targets: list[float]  # log10 FLOPs
    x_range: tuple[float, float]  # the candidates' log10 train FLOPs

    @classmethod
    def make(cls, name: str, families: list[str], targets: list[float] | None,
             x_range: tuple[float, float]) -> Question:
        if name not in QUESTIONS:
            raise ConfigError(f"unknown study.question={name!r}; use one of "
                              + ", ".join(QUESTIONS) + ".")
        lo, hi = x_range
        if name == "crossover" and len(families) != 2:
            raise ConfigError(f"study.question=crossover needs two families in the grid (or "
                              f"study.families=[vit,bit]); it has {families}.")
        if name == "extrapolate":
            if not targets:
                raise ConfigError("study.question=extrapolate needs study.targets=[<train "
                                  "FLOPs>, ...] beyond the grid's compute.")
            inside = [t for t in targets if t <= hi]
            if inside:
                raise ConfigError(f"study.targets {10 ** inside[0]:.3g} FLOPs is inside the "
                                  f"grid (up to {10 ** hi:.3g}); use study.question=frontier.")
        if not targets:  # five budgets spread over the grid's range
            targets = list(np.linspace(lo, hi, 7)[1:-1]) if hi > lo else [lo]
        return cls(name, list(families), [float(t) for t in targets], (float(lo), float(hi)))

    def _diff(self, post: Posterior, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.families
        d = post.mean(a, x) - post.mean(b, x)
        return d, post.grad(a, x) - post.grad(b, x)

    def rows(self, post: Posterior, cov: np.ndarray | None = None) -> np.ndarray:
        """The gradients whose summed variance the next runs shrink (empty: answered)."""
        c = post.cov if cov is None else cov
        if self.name != "crossover":
            g = np.vstack([post.grad(f, self.targets) for f in self.families])
            return g
        xs = np.unique(np.concatenate([np.linspace(*self.x_range, N_GRID), self.targets]))
        d, g = self._diff(post, xs)
        sd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", g, c, g), 1e-18))
        g = g[np.abs(d) < Z95 * sd]
        if len(g) > MAX_ROWS:
            g = g[np.linspace(0, len(g) - 1, MAX_ROWS).round().astype(int)]
        return g

    def answer(self, post: Posterior) -> Answer:
        if self.name == "crossover":
            return self._crossover(post)
        values, width = {}, 0.0
        for f in self.families:
            m, s = post.mean(f, self.targets), post.sd(f, self.targets)
            values[f] = {t: (float(mi), float(mi - Z95 * si), float(mi + Z95 * si))
                         for t, mi, si in zip(self.targets, m, s)}
            width = max(width, float(2 * Z95 * s.max() * 100))
        return Answer(self.name, None, None, width, "points", values=values)

    def _crossover(self, post: Posterior) -> Answer:
        xs = np.linspace(*self.x_range, N_GRID)
        d, g = self._diff(post, xs)
        sd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", g, post.cov, g), 0.0))
        unknown = np.abs(d) < Z95 * sd
        ci = (float(xs[unknown].min()), float(xs[unknown].max())) if unknown.any() else None
        flips = np.nonzero(np.sign(d[:-1]) * np.sign(d[1:]) < 0)[0]
        est = None
        if len(flips):  # the first crossing, linearly interpolated between grid points
            i = int(flips[0])
            est = float(xs[i] - d[i] * (xs[i + 1] - xs[i]) / (d[i + 1] - d[i]))
        dt, gt = self._diff(post, self.targets)
        sdt = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", gt, post.cov, gt), 0.0))
        signs = {t: int(np.sign(v)) if abs(v) >= Z95 * s else 0
                 for t, v, s in zip(self.targets, dt, sdt)}
        width = 0.0 if ci is None else ci[1] - ci[0]
        return Answer("crossover", est, ci, width, "decades", signs=signs,
                      undetermined=not any(signs.values()))


def reached(ans: Answer, ref: Answer) -> bool:
    """Does `ans` give the reference's (the full grid's) answer? crossover: the same verdict
    on whether there is a crossing, the crossing inside the reference's interval, and the
    reference's sign at every target where that sign is known; where the reference knows the
    sign at no target (its crossing, if any, is noise), the answer must not claim one either.
    frontier/extrapolate: every estimate inside the reference's 95% interval."""
    if ref.question == "crossover":
        if ref.undetermined:
            return ans.undetermined
        if (ans.estimate is None) != (ref.estimate is None):
            return False
        if ref.estimate is not None:
            lo, hi = ref.ci if ref.ci is not None else (ref.estimate, ref.estimate)
            if not lo <= ans.estimate <= hi:
                return False
        return all(ans.signs.get(t) == s for t, s in ref.signs.items() if s != 0)
    return all(ref.values[f][t][1] <= ans.values[f][t][0] <= ref.values[f][t][2]
               for f in ref.values for t in ref.values[f])
