"""The report's "Predictions vs outcomes": do the fits extrapolate? Each scored run has a
top-1 prediction with a 90% band for one run, made without its result; the section counts how
many results fall inside their bands (about 90% if the bands are honest).

Two sources of predictions:
- an adaptive sweep's `plan/decisions.jsonl` (one line per chosen run, written before it
  trained): each decision is joined to its row by run_id;
- a plain grid (no decisions): per family, the surrogate (adaptive.model) is fitted on the
  frontier of the cheaper half of the settings (by distinct train compute) and predicts the
  dearer settings on the family's frontier (dominated ones are named, not scored).

Only runs of the tuning that validation picks for their setting are scored (the report's
frontier rule, load.aggregate_points); the other tunings' runs are counted, not scored.
A decisions line that is not JSON or lacks a field is skipped and named (file:line), as a
broken row file is: a sweep that is still writing must not stop the report.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from benchbench.adaptive import log, model
from benchbench.adaptive.design import Z90
from benchbench.report import tables
from benchbench.report.load import Study, aggregate_points, families_in, setting_key
from benchbench.report.pareto import pareto_front
from benchbench.units import fmt_flops

DECISIONS = Path(log.PLAN) / log.DECISIONS
ROUNDS = Path(log.PLAN) / log.ROUNDS
BAND = 0.9  # the predictions' band (decisions carry theirs in `band`)
NEEDED = ("run_id", "predicted_top1", "predicted_top1_lo", "predicted_top1_hi")
X_DECIMALS = 2  # log10 computes within ~2% are one compute when halving a family's settings
COLUMNS = ["run_id", "family", "model", "seed", "train_flops", "predicted", "lo", "hi",
           "observed", "error_points", "inside"]


@dataclass
class Predictions:
    mode: str  # "decisions" or "holdout"
    scored: pd.DataFrame  # COLUMNS (+ round in decisions mode), one row per scored run
    lines: list[str] = field(default_factory=list)  # the section's text, before the table
    skipped: list[str] = field(default_factory=list)  # decisions lines skipped, named
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def coverage(self) -> tuple[int, int, float, float]:
        """(inside, scored, 95% exact binomial CI of the coverage)."""
        k, n = int(self.scored["inside"].sum()), len(self.scored)
        if not n:
            return 0, 0, math.nan, math.nan
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        return k, n, float(ci.low), float(ci.high)

    def verdict(self) -> str:
        k, n, lo, hi = self.coverage
        if not n:
            return "no prediction has an outcome yet"
        err = float(self.scored["error_points"].mean())
        s = (f"{k} of {n} runs inside their 90% bands (coverage {k / n:.0%}, 95% CI "
             f"{lo:.0%}-{hi:.0%}); mean signed error (observed - predicted) {err:+.2f} points")
        if hi < BAND:
            return s + ": the bands are too narrow: the fits do not extrapolate"
        if lo > BAND:
            return s + ": the bands are wider than the outcomes need"
        return s + ": consistent with honest 90% bands"

    def finding(self) -> str:
        src = ("pre-registered in plan/decisions.jsonl" if self.mode == "decisions"
               else "fit on the cheaper half, predict the dearer half")
        return f"Predictions vs outcomes ({src}): {self.verdict()}."

    def markdown(self) -> list[str]:
        L = ["## Predictions vs outcomes", ""] + self.lines + [""]
        if len(self.scored):
            L += [f"**{self.verdict()}.** Runs of one setting share its curve's error, so "
                  f"the CI (which counts runs as independent) is on the narrow side.", ""]
            L += ["Files: [CSV](predictions.csv), [Markdown](predictions.md), "
                  "[LaTeX](predictions.tex).", "", tables.to_markdown(self.display()), ""]
        if self.rounds:
            L += ["### Rounds of the adaptive sweep", "", "| round | spent | budget | answer "
                  "| stop |", "|---|---|---|---|---|"]
            for r in self.rounds:
                a = r.get("answer") if isinstance(r.get("answer"), dict) else {}
                L.append(f"| {r.get('round', '?')} | {_g(r.get('spent'))} | {_g(r.get('budget'))}"
                         f" | {a.get('summary', '–')} | {r.get('stop') or '–'} |")
            L.append("")
        if self.skipped:
            L += ["Skipped decisions lines (kept on disk): "
                  + "; ".join(f"`{s}`" for s in self.skipped) + ".", ""]
        return L

    def display(self) -> pd.DataFrame:
        s = self.scored
        pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
        d = pd.DataFrame({
            "run": s["run_id"], "family": s["family"], "model": s["model"],
            "seed": s["seed"].map(lambda v: "?" if v is None or v != v else str(v)),
            "train [FLOPs]": s["train_flops"].map(lambda v: tables.fmt_sci(v, 2)),
            "predicted top-1 [90% band] [%]": [f"{pct(m)} [{pct(lo)}, {pct(hi)}]"
                                               for m, lo, hi in zip(s["predicted"], s["lo"], s["hi"])],
            "observed [%]": s["observed"].map(pct),
            "inside": s["inside"].map(lambda b: "yes" if b else "**no**")})
        if "round" in s:
            d.insert(0, "round", s["round"].map(str))
        return d

    def write(self, out: Path) -> list[Path]:
        return tables.write_table(self.scored, self.display(), out, "predictions",
                                  caption="Predictions vs outcomes (90% bands for one run)")


def _g(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) else "–"


def read_jsonl(path: Path, needed: tuple[str, ...] = ()) -> tuple[list[dict], list[str]]:
    """The JSON objects of a .jsonl file with every `needed` field, and 'file:line: why' for
    each line skipped (blank lines are ignored)."""
    recs, skipped = [], []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            skipped.append(f"{path}:{i}: not JSON")
            continue
        miss = [k for k in needed if not isinstance(rec, dict) or rec.get(k) is None
                or (k != "run_id" and not isinstance(rec.get(k), int | float))]
        if miss:
            skipped.append(f"{path}:{i}: no valid {', '.join(miss)}")
            continue
        recs.append(rec)
    return recs, skipped


def selected_points(train: pd.DataFrame) -> set[str]:
    """The `point` keys of the tunings validation picks (one per setting)."""
    return set(aggregate_points(train)["point"]) if len(train) else set()


def _score(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(error_points=100 * (df["observed"] - df["predicted"]),
                   inside=(df["observed"] >= df["lo"]) & (df["observed"] <= df["hi"]))
    return df.sort_values(["family", "train_flops", "run_id"], kind="stable").reset_index(drop=True)


def from_decisions(study: Study) -> Predictions | None:
    """Score every decision of the study's dirs that has an ok row; None without decisions."""
    files = [d / DECISIONS for d in study.dirs if (d / DECISIONS).is_file()]
    if not files:
        return None
    recs, skipped, rounds = [], [], []
    for f in files:
        r, s = read_jsonl(f, NEEDED)
        recs, skipped = recs + r, skipped + s
        if (f.parent / ROUNDS.name).is_file():
            rounds += read_jsonl(f.parent / ROUNDS.name)[0]
    seen, decided = set(), []
    for r in recs:  # a run decided twice keeps its first (earliest) prediction
        if str(r["run_id"]) not in seen:
            seen.add(str(r["run_id"]))
            decided.append(r)
    train = study.train.set_index("run_id", drop=False)
    status = dict(zip(study.df["run_id"], study.df["status"]))
    picked = selected_points(study.train)
    out, tuning, not_run, failed, other, prior = [], 0, 0, [], 0, 0
    for r in decided:
        rid = str(r["run_id"])
        if r.get("predicted_basis") == "prior":  # no run of its family yet: not a fit's
            prior += 1
            continue
        if rid not in train.index:
            if status.get(rid) not in (None, "ok"):
                failed.append(f"`{rid}` ({status[rid]})")
            elif rid in status:
                other += 1  # an ok row the report does not compare (other dataset, no metric)
            else:
                not_run += 1
            continue
        row = train.loc[rid]
        if row["point"] not in picked:
            tuning += 1
            continue
        obs = row["top1"] if pd.notna(row.get("top1")) else row["acc"]
        out.append({"round": r.get("round"), "run_id": rid, "family": row["family"],
                    "model": row["model"], "seed": row["seed"],
                    "train_flops": float(row["train_flops"]),
                    "predicted": float(r["predicted_top1"]), "lo": float(r["predicted_top1_lo"]),
                    "hi": float(r["predicted_top1_hi"]), "observed": float(obs)})
    scored = _score(pd.DataFrame(out, columns=["round"] + COLUMNS[:-2]))
    bands = {r.get("band") for r in decided if r.get("band") is not None}
    ran = [str(r["run_id"]) for r in decided if str(r["run_id"]) in train.index]
    flops = float(train.loc[ran, "train_flops"].sum()) if ran else 0.0
    lines = [f"Each run the adaptive sweep chose was given a top-1 prediction with a 90% band for "
             f"one run before it trained (`{', '.join(str(f) for f in files)}`). "
             f"{len(decided)} decision(s): {len(scored)} scored (the tuning validation picks "
             f"for its setting), {prior} made from the prior alone (the start design, before "
             f"any run of their family: not a fit's prediction, not scored), {tuning} tuning "
             f"run(s) not scored, {not_run} not run yet"
             + (f", {len(failed)} failed: {', '.join(failed)}" if failed else "")
             + (f", {other} with an ok row the report does not compare" if other else "") + "."]
    if bands - {BAND}:
        lines.append(f"*Some decisions carry a band other than 90% ({sorted(bands)}); their "
                     f"coverage is not comparable to 90%.*")
    lines.append(f"Compute: the {len(ran)} decided run(s) with an ok row trained {fmt_flops(flops)} "
                 f"(the sum of their rows' train_flops); the study's ok rows hold "
                 f"{fmt_flops(float(study.train['train_flops'].sum()))}.")
    if rounds and isinstance(rounds[-1].get("spent"), int | float):
        last = rounds[-1]
        unit = next((str(r["cost_unit"]) for r in decided if r.get("cost_unit")), "budget units")
        grid = last.get("grid")
        saved = (f"; the whole grid (every point of the question's families) would cost "
                 f"{_g(grid)}: the sweep spent {last['spent'] / grid:.1%} of it"
                 if isinstance(grid, int | float) and grid > 0 else "")
        lines.append(f"The sweep's last round had spent {_g(last['spent'])} of its budget "
                     f"{_g(last.get('budget'))} ({unit}){saved}.")
    return Predictions("decisions", scored, lines, skipped, rounds)


def holdout(study: Study) -> Predictions:
    """Plain grid: per family, fit on the cheaper half of the settings, predict the dearer."""
    train = study.train[study.train["train_flops"].notna() & (study.train["train_flops"] > 0)]
    lines = ["No `plan/decisions.jsonl`: this is a plain grid, so each family's surrogate "
             "(a saturating power law in log compute, benchbench.adaptive.model) is **fit on the "
             "cheaper half, predict the dearer half**: the frontier settings of the lower half "
             "of the family's distinct train computes are fitted (validation's pick of the "
             "tuning, every seed), and each seed's run of a dearer setting on the family's "
             "frontier is scored against its 90% band for one run (curve s.d. and seed "
             "noise).", ""]
    empty = _score(pd.DataFrame(columns=COLUMNS[:-2]))
    if train.empty:
        return Predictions("holdout", empty, lines + ["*No train rows with train_flops.*"])
    pts = aggregate_points(train)
    pts["x"] = np.log10(pts["train_flops"].astype(float))
    halves: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for fam in families_in(pts):
        p = pts[pts["family"] == fam]
        xr = p["x"].round(X_DECIMALS)
        xs = sorted(xr.unique())
        cut = xs[(len(xs) + 1) // 2 - 1]
        cheap, dear = p[xr <= cut], p[xr > cut]
        # the curve is the family's Pareto frontier (the planner's and the report's rule):
        # fit the cheaper half's own frontier; score the dearer settings on the family's
        # frontier (a ViT/8 beaten by a cheaper ViT/16 is another architecture, not the curve)
        cheap = cheap.iloc[pareto_front(cheap["x"], cheap["acc"])]
        on = p.iloc[pareto_front(p["x"], p["acc"])]
        off = dear[~dear.index.isin(on.index)]
        dear = dear[dear.index.isin(on.index)]
        if len(off):
            lines.append(f"- {fam}: {len(off)} dearer setting(s) off the family's frontier "
                         f"(beaten by a cheaper one) are not scored: "
                         + ", ".join(f"{m} at {fmt_flops(float(c))}" for m, c in
                                     zip(off["model"], off["train_flops"])) + ".")
        if cheap["x"].round(X_DECIMALS).nunique() < 2 or len(dear) < 2:
            lines.append(f"- {fam}: skipped: {len(p)} setting(s) at {len(xs)} compute(s); "
                         f"the cheaper half needs 2 computes on its frontier and the dearer "
                         f"half 2 settings on the family's.")
            continue
        halves[fam] = (cheap, dear)
    if not halves:
        return Predictions("holdout", empty, lines)
    cheap_settings = {_setting(r) for c, _ in halves.values() for r in c.to_dict("records")}
    reps = [g["acc"].to_numpy(dtype=float) for _, g in train.groupby("point", sort=False)
            if len(g) > 1 and _setting(g.iloc[0].to_dict()) in cheap_settings
            and g["family"].iloc[0] in halves]  # every tuning's seeds measure the noise
    obs = {f: (np.repeat(c["x"].to_numpy(), c["n_seeds"].to_numpy()),
               np.concatenate([np.asarray(v, dtype=float) for v in c["acc_values"]]))
           for f, (c, _) in halves.items()}
    x_ref = float(np.median(np.concatenate([np.concatenate([c["x"], d["x"]])
                                            for c, d in halves.values()])))
    with np.errstate(over="ignore"):  # the optimiser's trial steps may overflow exp; harmless
        post = model.fit(obs, list(halves), x_ref, reps)
    out = []
    for fam, (cheap, dear) in halves.items():
        lines.append(f"- {fam}: fitted on {len(cheap)} setting(s) up to "
                     f"{fmt_flops(float(cheap['train_flops'].max()))}, predicting {len(dear)} "
                     f"from {fmt_flops(float(dear['train_flops'].min()))}.")
        for p in dear.to_dict("records"):
            m = float(post.mean(fam, p["x"])[0])
            band = Z90 * math.sqrt(float(post.sd(fam, p["x"])[0]) ** 2 + post.sigma ** 2)
            for r in train[train["point"] == p["point"]].to_dict("records"):
                out.append({"run_id": r["run_id"], "family": fam, "model": r["model"],
                            "seed": r["seed"], "train_flops": float(r["train_flops"]),
                            "predicted": m, "lo": m - band, "hi": m + band,
                            "observed": float(r["acc"])})
    source = ("the seeds' pooled s.d." if reps else
              f"the default {100 * model.SIGMA_DEFAULT:.2f} points: no cheaper setting repeats a seed")
    lines.append(f"- one run's noise s.d. in the bands: {100 * post.sigma:.2f} points ({source}, "
                 f"floored by the fit's scatter).")
    return Predictions("holdout", _score(pd.DataFrame(out, columns=COLUMNS[:-2])), lines)


def _setting(r: dict[str, Any]) -> str:
    """A row's setting (load.setting_key); a row without a config is its own point."""
    return setting_key(r) or str(r["point"])


def build(study: Study, out: Path) -> Predictions:
    """The section for a study: from its decisions when it has any, else the holdout; writes
    predictions.csv/.md/.tex beside report.md when a run was scored."""
    pred = from_decisions(study) or holdout(study)
    if len(pred.scored):
        pred.write(out)
    return pred
