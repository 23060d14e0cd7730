"""hydra/sweeper=adaptive's work apart from Hydra: the study keys, the grid as priced
candidates, the rounds, and the decision log (<results.dir>/plan/decisions.jsonl).

The plugin (hydra_plugins/benchbench_sweeper/adaptive_sweeper.py) expands and composes the
grid and lends `run` a launcher; `run` then repeats: read the rows, relaunch a decided run
that has no row (a sweep killed after it decided), else ask design.Planner for a round,
write its decisions (fsynced, before any of them trains) and launch them, until the round
says stop. Cost is train FLOPs (study.budget_flops) or predicted device-seconds
(study.budget_device_h, benchbench.plan's estimate; a replayed point costs its pool row's
measured time).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchbench.adaptive.design import Candidate, Planner, Round, identify
from benchbench.adaptive.log import Log, money
from benchbench.adaptive.questions import QUESTIONS
from benchbench.errors import ConfigError

BAND = 0.9  # the decisions' predicted top-1 band (design.Z90)
Launch = Callable[[list[list[str]]], list[dict[str, Any]]]  # overrides -> job summaries


@dataclass
class Study:
    """The study.* keys of an adaptive sweep, checked."""

    question: str
    budget: float  # in `unit`
    unit: str  # "flops" | "device_s"
    target_ci: float | None
    targets: list[float] | None  # log10 train FLOPs
    families: list[str] | None
    batch: int
    start: int
    min_gain: float
    start_share: float = 0.5

    @classmethod
    def of(cls, study: Any) -> Study:
        q = study.get("question")
        if q is None:
            raise ConfigError("hydra/sweeper=adaptive needs a question: study.question="
                              + "|".join(QUESTIONS) + ".")
        if q not in QUESTIONS:
            raise ConfigError(f"unknown study.question={q!r}; use one of "
                              + ", ".join(QUESTIONS) + ".")
        flops, hours = study.get("budget_flops"), study.get("budget_device_h")
        if (flops is None) == (hours is None):
            raise ConfigError(
                "hydra/sweeper=adaptive needs exactly one budget: study.budget_flops=<train "
                "FLOPs> or study.budget_device_h=<device-hours>" + (
                    "" if flops is None else ", not both") + ".")
        budget, unit = (float(flops), "flops") if flops is not None else (
            float(hours) * 3600, "device_s")
        if not budget > 0:
            raise ConfigError(f"the adaptive sweep needs a positive budget, got "
                              f"{flops if flops is not None else hours}.")
        targets = study.get("targets")
        if targets is not None:
            targets = list(targets)
            if not all(isinstance(t, int | float) and t > 0 for t in targets):
                raise ConfigError(f"study.targets are train FLOPs (positive numbers), got "
                                  f"{targets}.")
            targets = [math.log10(t) for t in targets]
        fams = study.get("families")
        return cls(str(q), budget, unit, study.get("target_ci"), targets,
                   None if fams is None else [str(f) for f in fams],
                   int(_or(study.get("batch"), 4)), int(_or(study.get("start"), 3)),
                   float(_or(study.get("min_gain"), 0.01)),
                   float(_or(study.get("start_share"), 0.5)))

    def planner(self, candidates: list[Candidate]) -> Planner:
        return Planner(self.question, candidates, self.budget, batch=self.batch,
                       target_ci=self.target_ci, start=self.start, families=self.families,
                       targets=self.targets, min_gain=self.min_gain,
                       start_share=self.start_share)


def _or(v: Any, default: Any) -> Any:
    return default if v is None else v


@dataclass
class Point:
    candidate: Candidate
    rdir: Path  # where its row goes


def candidates(points: list[tuple[list[str], Any]], unit: str) -> list[Point]:
    """One Point per distinct run_id of the composed grid (a CNN at two patch sizes is one
    run), priced. A task=replay point with no row in its pool is left out (it can never have
    a row); when no point has one, ConfigError names the pool."""
    from benchbench import models, point, results
    from benchbench.tasks import replay

    out: list[Point] = []
    seen: set[str] = set()
    train: list[tuple[int, list[str], Any]] = []  # priced by benchbench.plan, below
    replays = 0
    for over, cfg in points:
        d = point.resolved_config(cfg)
        run_id = results.run_id_of(d)
        if run_id in seen:
            continue
        seen.add(run_id)
        setting, tuning, seed = identify(d)
        base = dict(index=len(out), overrides=tuple(over), run_id=run_id,
                    family=models.family_of(cfg.model),
                    setting=hashlib.sha256(setting.encode()).hexdigest()[:10],
                    tuning=tuning, seed=seed)
        rdir = Path(point.abs_path(str(cfg.results.dir)))
        if str(cfg.task.name) == "replay":
            replays += 1
            _, row = replay.find(replay.pool_dir(cfg), results.redact(results.identity_config(d)))
            if row is None or not row.get("train_flops"):
                continue
            flops, dev = float(row["train_flops"]), row.get("wall_s")
            if unit == "device_s" and not dev:
                raise ConfigError(f"the pool row of {' '.join(over)} has no wall_s to price "
                                  f"it by; use study.budget_flops.")
            out.append(Point(Candidate(**base, train_flops=flops,
                                       cost=flops if unit == "flops" else float(dev)), rdir))
            continue
        out.append(Point(Candidate(**base, train_flops=0.0, cost=0.0), rdir))
        train.append((len(out) - 1, over, cfg))
    if replays and not out:
        pools = sorted({str(replay.pool_dir(c)) for _, c in points
                        if str(c.task.name) == "replay"})
        raise ConfigError(replay.no_match(pools[0], replays))
    _price(out, train, unit)
    return out


def _price(out: list[Point], train: list[tuple[int, list[str], Any]], unit: str) -> None:
    """train_flops (benchbench.plan.bill: the row's own number) and, for a device budget,
    predicted device-seconds (benchbench.plan.plan_rows: task=measure rows or assumed MFU)."""
    from dataclasses import replace

    from benchbench import plan

    if not train:
        return
    if unit == "flops":
        priced = [plan.bill(cfg) for _, _, cfg in train]
    else:
        priced = plan.plan_rows([(over, cfg) for _, over, cfg in train])
    for (i, over, _), p in zip(train, priced, strict=True):
        flops, dev = p.get("train_flops"), p.get("predicted_device_s")
        cost = flops if unit == "flops" else dev
        if not flops or cost is None:
            why = p.get("error") or p.get("device_s_basis") or "no train FLOPs"
            raise ConfigError(f"the adaptive sweep cannot price the point {' '.join(over)} "
                              f"({why}); it plans task=train and task=replay points.")
        c = out[i].candidate
        out[i] = Point(replace(c, train_flops=float(flops), cost=float(cost)), out[i].rdir)


def read_rows(points: list[Point]) -> dict[str, dict[str, Any]]:
    """run_id -> row of every point with a finished row (an interrupted one holds nothing)."""
    from benchbench import results
    from benchbench.errors import ResultsError

    rows = {}
    for p in points:
        path = results.row_path(p.rdir, p.candidate.run_id)
        if not path.is_file():
            continue
        try:
            row = results.read_row(path)
        except ResultsError:
            continue
        if row.get("status") != "interrupted":
            rows[p.candidate.run_id] = row
    return rows


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _num(v: float) -> float | None:
    return round(float(v), 6) if v is not None and math.isfinite(v) else None


def decisions(rnd: Round, n: int, study: Study) -> list[dict[str, Any]]:
    out = []
    for ch in rnd.chosen:
        mean, lo, hi = ch.predicted
        for c in ch.runs:
            out.append({
                "round": n, "run_id": c.run_id, "overrides": list(c.overrides),
                "family": c.family, "setting": c.setting, "tuning": c.tuning, "seed": c.seed,
                "train_flops": c.train_flops, "cost": c.cost, "cost_unit": study.unit,
                "why": ch.why, "predicted_top1": _num(mean), "predicted_top1_lo": _num(lo),
                "predicted_top1_hi": _num(hi), "predicted_basis": ch.basis, "band": BAND,
                "question": study.question,
                "decided_at": _now()})
    return out


def run(points: list[Point], study: Study, plan_dir: Path, launch: Launch,
        say: Callable[[str], None] = print) -> Round:
    """The sweep: rounds until the planner stops (the last round is returned)."""
    planner = study.planner([p.candidate for p in points])
    by_id = {p.candidate.run_id: p.candidate for p in points}
    grid = planner.grid_cost()
    log = Log(plan_dir)
    n = log.last_round()
    relaunched: set[str] = set()  # a resumed run is relaunched once per launch, not forever
    while True:
        rows = read_rows(points)
        decided = {d["run_id"] for d in log.read(log.decisions) if d.get("run_id") in by_id}
        orphans = [r for r in sorted(decided) if r not in rows and r not in relaunched]
        if orphans:
            say(f"benchbench: adaptive: relaunching {len(orphans)} decided run(s) that have "
                f"no row (a sweep stopped before they finished)")
            relaunched.update(orphans)
            _launch(launch, [list(by_id[r].overrides) for r in orphans], say)
            continue
        rnd = planner.step(rows, decided)
        n += 1
        if rnd.stop is None and not rnd.chosen:
            rnd.stop = "nothing left that the budget can pay for"
        ans = rnd.answer.to_json() if rnd.answer is not None else None
        log.append(log.rounds, [{
            "round": n, "spent": rnd.spent, "budget": study.budget, "unit": study.unit,
            "grid": grid,  # what every point of the question's families would cost
            "answer": ans, "stop": rnd.stop, "sigma": rnd.sigma, "n_obs": rnd.n_obs,
            "chosen": [c.run_id for ch in rnd.chosen for c in ch.runs], "at": _now()}])
        summary = f"{study.question}: {ans['summary']}" if ans else study.question
        if rnd.stop:
            say(f"benchbench: adaptive sweep stopped after round {n}: {rnd.stop}. Spent "
                f"{money(rnd.spent, study.unit)} of {money(study.budget, study.unit)}; "
                f"{summary}. Decisions: {log.decisions}")
            return rnd
        recs = decisions(rnd, n, study)
        log.append(log.decisions, recs)  # before any of them trains
        cost = sum(ch.cost for ch in rnd.chosen)
        say(f"benchbench: adaptive round {n}: spent {money(rnd.spent, study.unit)} of "
            f"{money(study.budget, study.unit)}; {summary}; launching {len(recs)} run(s) "
            f"({len(rnd.chosen)} setting(s), {money(cost, study.unit)})")
        _launch(launch, [r["overrides"] for r in recs], say)


def _launch(launch: Launch, batch: list[list[str]], say: Callable[[str], None]) -> None:
    outs = launch(batch)
    bad = [o for o in outs if o.get("status") not in ("ok", "skipped")]
    if bad:  # failed rows are data: the planner reads them, the sweep goes on
        say(f"benchbench: adaptive: {len(bad)} of {len(batch)} run(s) did not end ok ("
            + ", ".join(sorted({str(o.get('status')) for o in bad})) + ")")
