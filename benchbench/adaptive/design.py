"""Which runs to pay for next: the adaptive sweep's rounds, without Hydra or torch.

A *setting* is a grid point minus its seed and its tuned values (train.lr, as the report's
frontier selects on validation); a *visit* of a setting is what one more observation of its
frontier value costs: the first visit runs every tuning at the first seed (validation then
picks one), a later visit runs the picked tuning at the next seed (frontier settings only).
Each round:

1. the start design first: per family, `start` settings spread evenly over the family's
   log-compute range from its cheapest end (the dearest end is left to step 3), taken in
   turn across the families, cheapest first, each while the sweep has spent no more than
   `start_share` of the budget with it (a dear start setting is left to step 3, which
   then decides whether it is worth its cost: at small budgets a fixed start spent most of
   the budget on one family, make bench-planner);
2. fit the surrogate (model.py) to the rows so far: the picked tuning's seeds of each setting
   on its family's Pareto frontier (a ViT/8 that a ViT/16 beats at less compute is not on
   the curve the question asks about; fitting it would read architecture as noise);
3. score every affordable visit by how much one more observation at its compute shrinks the
   question's summed variance (the Sherman-Morrison update of the Laplace covariance, exact for
   the linearised model); among the visits that shrink it by at least `min_gain` of it, take
   the best per unit of cost (filtering first: ranking first let a cheap visit that barely
   helps end the sweep while dearer ones near the crossing still helped), update the
   covariance as if it had run (the variance does not depend on the value it will return)
   and repeat to fill the batch.

It stops when the budget cannot pay for any remaining visit, when the question's interval is
narrower than `target_ci`, when no affordable visit would shrink the variance by
`min_gain` of it, or when the grid is spent. Every chosen run has a prediction made before it
trains: the setting's top-1 with a 90% band for one run (curve sd and seed noise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchbench.adaptive import model
from benchbench.adaptive.questions import Answer, Question
from benchbench.errors import ConfigError

Z90 = 1.644854  # the predictions' band: 90% for one run


@dataclass(frozen=True)
class Candidate:
    index: int  # position in the launch grid
    overrides: tuple[str, ...]
    run_id: str
    family: str
    setting: str  # same setting = same point but for seed and tuned values
    tuning: str  # the tuned values (e.g. train.lr=0.003); "" when nothing is tuned
    seed: Any
    train_flops: float
    cost: float  # in the budget's unit (FLOPs or predicted device-seconds)

    @property
    def x(self) -> float:
        return math.log10(self.train_flops)


@dataclass
class Choice:
    runs: list[Candidate]
    why: str
    predicted: tuple[float, float, float]  # top-1 of the setting's run: mean, 90% lo, hi
    gain: float  # the question's variance removed (NaN for the start design)
    basis: str = "prior"  # "prior" (no run of the family yet) or "fit on N run(s) of F"

    @property
    def cost(self) -> float:
        return float(sum(c.cost for c in self.runs))


@dataclass
class Round:
    chosen: list[Choice]
    stop: str | None
    answer: Answer | None
    spent: float  # the budget used by the rows and decisions so far (before this round)
    sigma: float | None = None
    n_obs: dict[str, int] = field(default_factory=dict)


@dataclass
class _Setting:
    key: str
    family: str
    x: float
    runs: list[Candidate]

    @property
    def tunings(self) -> list[str]:
        return sorted({c.tuning for c in self.runs})

    @property
    def seeds(self) -> list[Any]:
        return sorted({c.seed for c in self.runs}, key=lambda s: (str(type(s)), s))

    def run(self, tuning: str, seed: Any) -> Candidate | None:
        return next((c for c in self.runs if c.tuning == tuning and c.seed == seed), None)


def _acc(row: dict[str, Any], key: str) -> float | None:
    v = row.get(key)
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


class Planner:
    """One adaptive sweep: `step(rows, decided)` gives the next round."""

    def __init__(self, question: str, candidates: list[Candidate], budget: float, *,
                 batch: int = 4, target_ci: float | None = None, start: int = 3,
                 families: list[str] | None = None, targets: list[float] | None = None,
                 min_gain: float = 0.01, start_share: float = 0.5) -> None:
        if not candidates:
            raise ConfigError("the adaptive sweep has no candidate points; pass a grid with -m.")
        if not budget > 0:
            raise ConfigError(f"the adaptive sweep needs a positive budget, got {budget}.")
        if batch < 1 or start < 1:
            raise ConfigError("study.batch and study.start must be at least 1.")
        present = sorted({c.family for c in candidates})
        if families is None:  # crossover: ViT against the first other family present
            others = [f for f in present if f != "vit"]
            families = (["vit", ("bit" if "bit" in others else others[0])]
                        if question == "crossover" and "vit" in present and others else present)
        missing = [f for f in families if f not in present]
        if missing:
            raise ConfigError(f"study.families names {missing}, not in the grid (it has "
                              f"{present}).")
        self.settings: dict[str, _Setting] = {}
        for c in candidates:
            s = self.settings.setdefault(c.setting, _Setting(c.setting, c.family, c.x, []))
            s.runs.append(c)
        mine = [c for c in candidates if c.family in families]
        x = [c.x for c in mine]
        lo, hi = min(x), max(x)
        if question == "crossover":  # only where both families have runs: no held-flat verdict
            lo = max(min(c.x for c in mine if c.family == f) for f in families)
            hi = min(max(c.x for c in mine if c.family == f) for f in families)
            if lo > hi:
                raise ConfigError(f"the grid's {families[0]} and {families[1]} computes do not "
                                  f"overlap, so no compute has runs of both; widen the grid "
                                  f"(e.g. more epochs or sizes) before asking for a crossover.")
        self.question = Question.make(question, families, targets, (lo, hi))
        self.x_ref = float(np.median(x))
        cheapest = min(self._visit_cost(s, set()) for s in self._mine())
        if budget < cheapest:
            raise ConfigError(f"the budget ({budget:.4g}) is smaller than the cheapest point "
                              f"of the grid ({cheapest:.4g}); raise study.budget_flops or "
                              f"study.budget_device_h.")
        self.budget, self.batch, self.target_ci = float(budget), batch, target_ci
        self.start, self.min_gain, self.start_share = start, min_gain, start_share

    def _mine(self) -> list[_Setting]:
        return [s for s in self.settings.values() if s.family in self.question.families]

    # -- what the rows say -------------------------------------------------------------
    def _picked(self, s: _Setting, rows: dict[str, dict[str, Any]]) -> tuple[str | None, list[float]]:
        """(tuning, top-1 of its seeds) validation picks for setting s; (None, []) unrun."""
        best, best_sel, vals = None, -math.inf, []
        for t in s.tunings:
            ok = [rows[c.run_id] for c in s.runs if c.tuning == t and c.run_id in rows
                  and rows[c.run_id].get("status") == "ok" and _acc(rows[c.run_id], "top1") is not None]
            if not ok:
                continue
            sel = [_acc(r, "val_top1") if _acc(r, "val_top1") is not None else _acc(r, "top1")
                   for r in ok]
            m = float(np.mean(sel))
            if m > best_sel:
                best, best_sel, vals = t, m, [_acc(r, "top1") for r in ok]
        return best, vals

    def frontier(self, rows: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
        """setting -> top-1 of its picked tuning's seeds, for the settings on their family's
        Pareto frontier (report.pareto's rule, on the seed means): a setting that another
        of its family beats with less compute says nothing about the frontier's curve."""
        from benchbench.report.pareto import pareto_front

        out: dict[str, list[float]] = {}
        for f in self.question.families:
            run = [(s, vals) for s in self._mine() if s.family == f
                   and (vals := self._picked(s, rows)[1])]
            keep = pareto_front([s.x for s, _ in run], [float(np.mean(v)) for _, v in run])
            out.update({run[i][0].key: run[i][1] for i in keep})
        return out

    def posterior(self, rows: dict[str, dict[str, Any]]) -> model.Posterior:
        obs: dict[str, tuple[list[float], list[float]]] = {}
        reps = []
        for key, vals in self.frontier(rows).items():
            s = self.settings[key]
            xs, ys = obs.setdefault(s.family, ([], []))
            xs.extend([s.x] * len(vals))
            ys.extend(vals)
        for s in self._mine():
            for t in s.tunings:  # every tuning's repeated seeds measure the noise
                v = [_acc(rows[c.run_id], "top1") for c in s.runs if c.tuning == t
                     and c.run_id in rows and rows[c.run_id].get("status") == "ok"]
                v = [a for a in v if a is not None]
                if len(v) > 1:
                    reps.append(np.array(v))
        return model.fit({f: (np.array(x), np.array(y)) for f, (x, y) in obs.items()},
                         self.question.families, self.x_ref, reps)

    # -- visits ------------------------------------------------------------------------
    def _next_runs(self, s: _Setting, rows: dict[str, dict[str, Any]], taken: set[str],
                   front: dict[str, list[float]] | None = None) -> list[Candidate]:
        """The runs of s's next visit (empty: nothing left to learn from s)."""
        first = s.seeds[0]
        todo = [s.run(t, first) for t in s.tunings]
        todo = [c for c in todo if c is not None and c.run_id not in taken]
        if todo:
            return todo
        tuning, _ = self._picked(s, rows)
        if tuning is None or (front is not None and s.key not in front):
            return []  # unrun, or off the frontier: another seed would not move the curve
        return next(([c] for seed in s.seeds[1:] if (c := s.run(tuning, seed)) is not None
                     and c.run_id not in taken), [])

    def _visit_cost(self, s: _Setting, taken: set[str]) -> float:
        runs = self._next_runs(s, {}, taken)
        return float(sum(c.cost for c in runs)) if runs else math.inf

    def grid_cost(self) -> float:
        """What running every point of the question's families would cost (the grid)."""
        return float(sum(c.cost for s in self._mine() for c in s.runs))

    def spent(self, rows: dict[str, dict[str, Any]], decided: set[str]) -> float:
        """The budget used: every grid point with a row or a decision (a run that failed
        still cost what it cost)."""
        return float(sum(c.cost for s in self.settings.values() for c in s.runs
                         if c.run_id in rows or c.run_id in decided))

    @staticmethod
    def _basis(post: model.Posterior, s: _Setting) -> str:
        """'prior' before any run of the family (a start setting: the band is the prior's
        and says nothing of the fits), else what the fit stood on."""
        n = post.n_obs.get(s.family, 0)
        return "prior" if n == 0 else f"fit on {n} run(s) of {s.family}"

    def step(self, rows: dict[str, dict[str, Any]], decided: set[str] | None = None) -> Round:
        """The next round given the rows so far (run_id -> row) and the run_ids already
        chosen (decisions.jsonl); a chosen run without a row is not chosen again."""
        taken = set(rows) | set(decided or ())
        spent = self.spent(rows, taken)
        left = self.budget - spent
        post = self.posterior(rows)
        ans = self.question.answer(post)
        rnd = Round([], None, ans, spent, post.sigma, post.n_obs)
        front = self.frontier(rows)
        open_ = {s.key: r for s in self._mine() if (r := self._next_runs(s, rows, taken, front))}
        if not open_:
            rnd.stop = "the grid is spent: every point of the question's families has run"
            return rnd
        keys = self._start_keys()
        touched = {c.setting for s in self.settings.values() for c in s.runs if c.run_id in taken}
        start = [k for k in keys if k in open_ and k not in touched] if touched <= set(keys) else []
        allow = min(left, self.start_share * self.budget - spent)  # the start's share of it
        for k in start:
            cost = sum(c.cost for c in open_[k])
            if cost <= allow and len(rnd.chosen) < self.batch:
                s = self.settings[k]
                rnd.chosen.append(Choice(open_[k], f"start: a space-filling setting of "
                                  f"{s.family} (10^{s.x:.2f} FLOPs)",
                                  predict(post, s.family, s.x), math.nan,
                                  self._basis(post, s)))
                left, allow = left - cost, allow - cost
        if rnd.chosen:
            return rnd
        if self.target_ci is not None and ans.width <= self.target_ci:
            rnd.stop = (f"the {self.question.name} interval ({ans.width:.3g} {ans.unit}) is "
                        f"within study.target_ci={self.target_ci:g}")
            return rnd
        return self._greedy(rnd, post, open_, left)

    def _start_keys(self) -> list[str]:
        """The start settings, in turn across the families from each one's cheapest end."""
        keys, rank = [], {}
        for n, f in enumerate(self.question.families):
            ss = sorted((s for s in self._mine() if s.family == f), key=lambda s: s.x)
            lo, hi = ss[0].x, ss[-1].x
            for i in range(min(self.start, len(ss))):
                want = lo + (hi - lo) * i / self.start
                pick = min((s for s in ss if s.key not in keys), key=lambda s: abs(s.x - want))
                keys.append(pick.key)
                rank[pick.key] = (i, n)
        return sorted(keys, key=rank.__getitem__)

    def _greedy(self, rnd: Round, post: model.Posterior, open_: dict[str, list[Candidate]],
                left: float) -> Round:
        cov = post.cov.copy()
        g_rows = self.question.rows(post, cov)
        total = float(np.einsum("ij,jk,ik->", g_rows, cov, g_rows)) if len(g_rows) else 0.0
        if total <= 0:
            rnd.stop = f"answered: the {self.question.name} has no uncertain part left"
            return rnd
        var2 = post.sigma ** 2
        pool = dict(open_)
        while pool and len(rnd.chosen) < self.batch:
            best, top, fits = None, 0.0, False
            for k, runs in pool.items():
                cost = sum(c.cost for c in runs)
                if cost > left:
                    continue
                fits = True
                s = self.settings[k]
                j = post.grad(s.family, s.x)[0]
                v = cov @ j
                gain = float(np.sum((g_rows @ v) ** 2) / (var2 + j @ v))
                top = max(top, gain)
                # min_gain filters before gain per cost ranks: a cheap run that barely helps
                # must not end the sweep while a dearer one would still help
                if gain >= self.min_gain * total and (best is None or gain / cost > best[0]):
                    best = (gain / cost, k, gain, j, v, cost)
            if not fits:
                if not rnd.chosen:
                    cheapest = min(sum(c.cost for c in r) for r in pool.values())
                    rnd.stop = (f"the budget is spent: {left:.4g} left, the cheapest "
                                f"remaining visit costs {cheapest:.4g}")
                break
            if best is None:
                if not rnd.chosen:
                    rnd.stop = (f"no candidate helps: the best would shrink the "
                                f"{self.question.name}'s variance by {top / total:.2%} "
                                f"(< study.min_gain={self.min_gain:g})")
                break
            _, k, gain, j, v, cost = best
            s = self.settings[k]
            rnd.chosen.append(Choice(pool.pop(k), (
                f"shrinks the {self.question.name}'s variance by {gain / total:.1%} for "
                f"{cost:.3g} (best gain per cost of {len(pool) + 1})"),
                predict(post, s.family, s.x), gain, self._basis(post, s)))
            cov -= np.outer(v, v) / (var2 + j @ v)  # as if it had run: Sherman-Morrison
            left -= cost
        return rnd


def identify(config: dict[str, Any]) -> tuple[str, str, Any]:
    """(setting, tuning, seed) of a resolved config (a row's `config`, or a composed point's
    container): the setting is the report's (report.load.setting_key: the point minus its
    seed and train.lr), so the planner and the report pick the same frontier."""
    from benchbench.report.load import SWEPT, setting_key

    setting = setting_key({"config": config}) or ""
    tuning = ",".join(f"{p}={_get(config, p)}" for p in SWEPT)
    return setting, tuning, config.get("seed")


def _get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def from_rows(rows: list[dict[str, Any]]) -> tuple[list[Candidate], dict[str, dict[str, Any]]]:
    """A results dir's ok task=train rows as candidates (cost = train FLOPs) and run_id ->
    row: the pool a planner fits (benchbench-plan's predictions, make bench-planner)."""
    rows = [r for r in rows if r.get("status") == "ok" and r.get("task", "train") == "train"
            and isinstance(r.get("config"), dict) and (r.get("train_flops") or 0) > 0]
    cands = []
    for i, r in enumerate(sorted(rows, key=lambda r: r["run_id"])):
        setting, tuning, seed = identify(r["config"])
        f = float(r["train_flops"])
        cands.append(Candidate(i, (), r["run_id"], r["family"], setting, tuning, seed, f, f))
    return cands, {r["run_id"]: r for r in rows}


def predict(post: model.Posterior, family: str, x: float) -> tuple[float, float, float]:
    """One run's top-1 at log10 FLOPs x: the curve's mean and a 90% band (curve s.d. and
    seed noise), clipped to [0, 1]."""
    m = float(post.mean(family, x)[0])
    band = Z90 * math.sqrt(float(post.sd(family, x)[0]) ** 2 + post.sigma ** 2)
    return (m, max(m - band, 0.0), min(m + band, 1.0))
