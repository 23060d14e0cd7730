"""The generated findings of report.md: sentences computed from the data, and plain
statements of what the data cannot answer. No number here is typed in by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd

from benchbench.families import label as family_label
from benchbench.report.compare import EqualCompute
from benchbench.report.load import Study
from benchbench.report.pareto import owner_segments
from benchbench.report.scaling import PowerLawFit
from benchbench.units import fmt_flops

TIE_PTS = 0.05  # differences below this many points are reported as a tie


def _pts(v: float) -> str:
    return f"{abs(v) * 100:.1f}"


def seeds_finding(points: pd.DataFrame) -> list[str]:
    if points.empty:
        return []
    n = points["n_seeds"]
    if n.max() <= 1:
        return ["Every point has a single seed: there are no confidence intervals, and "
                "differences smaller than the seed-to-seed spread cannot be told apart. "
                "Run more seeds (seed=0,1,2) to get them."]
    single = int((n <= 1).sum())
    if single:
        return [f"{single} of {len(points)} points have a single seed; the intervals only "
                f"cover the seed spread of the others."]
    return []


def equal_compute_findings(ec: EqualCompute, level: float = 0.95) -> list[str]:
    out = []
    for (fa, fb), d in ec.pairs.groupby(["family_a", "family_b"], sort=False):
        A, B = family_label(fa), family_label(fb)
        both = d[np.isfinite(d["diff"].to_numpy(float))]
        if both.empty:
            out.append(f"{A} and {B} share no compute budget: the data cannot compare them at "
                       f"equal compute.")
            continue
        picks = [both.iloc[0]] + ([both.iloc[-1]] if len(both) > 1 else [])
        for r in picks:
            out.append(_diff_sentence(r, A, B, level))
        signs = np.sign(np.where(np.abs(both["diff"]) * 100 < TIE_PTS, 0, both["diff"]))
        if (signs > 0).any() and (signs < 0).any():
            flip = np.flatnonzero(np.diff(signs) != 0)
            if len(flip):
                i = flip[0]
                out.append(f"The {A} - {B} difference changes sign between "
                           f"{fmt_flops(both['budget'].iloc[i])} and "
                           f"{fmt_flops(both['budget'].iloc[i + 1])}.")
        m = d[np.isfinite(d["multiplier"].to_numpy(float)) & (d["multiplier"] > 0)]
        if len(m):
            gm = float(np.exp(np.log(m["multiplier"]).mean()))
            span = (f"{m['multiplier'].min():.2g}-{m['multiplier'].max():.2g} over "
                    f"{fmt_flops(m['budget'].min())} to {fmt_flops(m['budget'].max())}"
                    if len(m) > 1 else f"at {fmt_flops(m['budget'].iloc[0])}")
            ratio = f"{B}'s compute / {A}'s: geometric mean {gm:.2g}, {span}"
            if 1 / 1.1 < gm < 1.1:
                out.append(f"{B} needs about as much compute as {A} to reach {A}'s accuracy "
                           f"({ratio}).")
            else:
                how, factor = ("more", gm) if gm > 1 else ("less", 1 / gm)
                out.append(f"{B} needs {factor:.2g}x {how} compute than {A} to reach {A}'s "
                           f"accuracy ({ratio}).")
        else:
            out.append(f"No budget where {B}'s frontier reaches {A}'s accuracy inside its "
                       f"measured range: no compute multiplier for {B} vs {A}.")
    return out


def _diff_sentence(r: pd.Series, A: str, B: str, level: float) -> str:
    at = f"At {fmt_flops(r['budget'])}"
    sign = 1.0 if r["diff"] >= 0 else -1.0  # the interval is quoted for winner - loser
    lo, hi = sorted((sign * r["diff_lo"] * 100, sign * r["diff_hi"] * 100))
    if np.isfinite(lo) and np.isfinite(hi):
        ci = f" [{level:.0%} CI {lo:.1f}, {hi:.1f}]"
        if lo <= 0 <= hi:
            ci += ", not distinguishable from a tie"
    else:
        ci = " (no CI: one seed per point)"
    if abs(r["diff"]) * 100 < TIE_PTS:
        return f"{at}, {A} and {B} tie ({r['acc_a'] * 100:.1f}%){ci}."
    win, lose = (A, B) if r["diff"] > 0 else (B, A)
    return f"{at}, {win} beats {lose} by {_pts(r['diff'])} points{ci}."


def leader_findings(ec: EqualCompute) -> list[str]:
    """Which family has the best interpolated accuracy at each budget, as runs of budgets
    (raw frontier points flip between families whose runs land 1% apart in FLOPs)."""
    b = ec.best[np.isfinite(ec.best["acc"].to_numpy(float))]
    if b.empty or b["family"].nunique() < 2:
        return []
    lead = b.loc[b.groupby("budget")["acc"].idxmax()].sort_values("budget")
    segs = owner_segments(lead, "budget")
    parts = [f"{family_label(g)} " + (f"at {fmt_flops(a)}" if a == b_ else f"from {fmt_flops(a)} to {fmt_flops(b_)}")
             for g, a, b_ in segs]
    if len(segs) == 1:
        return [f"{family_label(segs[0][0])} has the best accuracy at every budget it shares "
                f"with another family."]
    return ["Best family by budget: " + ", then ".join(parts) + "."]


def fit_findings(fits: dict[str, PowerLawFit], what: str, unit: str) -> list[str]:
    out = []
    for f, fit in fits.items():
        F = family_label(f)
        if not fit.fitted:
            out.append(f"{F} error vs {what}: no fit ({'; '.join(fit.reasons)}).")
            continue
        lo, hi = fit.ci("b")
        ci = f" [95% CI {lo:.2g}, {hi:.2g}]" if np.isfinite(lo) else ""
        s = (f"{F} error vs {what}: E = a({unit} + d)^-b + c with b = {fit.b:.2g}{ci}, "
             f"floor c = {fit.c * 100:.1f}%")
        if np.isfinite(fit.heldout_pred):
            s += (f"; fitted without the largest {what} it predicts {fit.heldout_pred * 100:.1f}% "
                  f"error there vs {fit.heldout_obs * 100:.1f}% observed")
        s += "." if fit.trustworthy else f". Not trustworthy: {'; '.join(fit.reasons)}."
        out.append(s)
    return out


def dataset_findings(points: pd.DataFrame) -> list[str]:
    pts = points[points["train_size"].notna()]
    sizes = np.sort(pts["train_size"].unique())
    if len(sizes) < 2:
        return []
    out, fams = [], []
    for n in (sizes[0], sizes[-1]):
        d = pts[pts["train_size"] == n]
        r = d.loc[d["acc"].idxmax()]
        fams.append(r["family"])
        out.append(f"{int(n)} training images: best model {r['model']} "
                   f"({family_label(r['family'])}, {r['acc'] * 100:.1f}%)")
    s = "With " + "; with ".join(out) + "."
    if fams[0] != fams[1]:
        s += (f" The best family changes from {family_label(fams[0])} to "
              f"{family_label(fams[1])} as data grows.")
    return [s]


def measure_findings(measure: pd.DataFrame) -> list[str]:
    m = measure[measure["image_size"].notna()]
    if m.empty:
        return []
    top = m["image_size"].max()
    d = m[m["image_size"] == top].groupby("model")[["infer_img_per_s", "max_batch_size"]].median()
    out = []
    if d["infer_img_per_s"].notna().any():
        best = d["infer_img_per_s"].idxmax()
        out.append(f"At {int(top)} px the fastest model is {best} "
                   f"({d.loc[best, 'infer_img_per_s']:.3g} img/s)")
    if d["max_batch_size"].notna().any():
        big = d["max_batch_size"].idxmax()
        out.append(f"the largest batch fits {big} ({int(d.loc[big, 'max_batch_size'])} images)")
    return ["; ".join(out) + "."] if out else []


def findings(study: Study, points: pd.DataFrame, ec: EqualCompute | None,
             fits_compute: dict[str, PowerLawFit], fits_data: dict[str, PowerLawFit],
             data_points: pd.DataFrame | None = None) -> list[str]:
    """All findings, most important first."""
    if points.empty:
        return (["No ok train row with an accuracy: nothing to compare yet."]
                + measure_findings(study.measure))
    out = seeds_finding(points)
    if points["family"].nunique() < 2:
        out.append(f"Only one family ({family_label(points['family'].iloc[0])}) has ok runs: "
                   f"no comparison between families.")
    if ec is not None:
        out += equal_compute_findings(ec)
        out += leader_findings(ec)
    out += fit_findings(fits_compute, "compute", "C")
    out += dataset_findings(points if data_points is None else data_points)
    out += fit_findings(fits_data, "dataset size", "N")
    out += measure_findings(study.measure)
    out += overhead_findings(study.train)
    return out


def overhead_findings(train: pd.DataFrame) -> list[str]:
    """How much of the runs' wall time was spent outside their training loops (start-up,
    data, FLOP counting, evaluation, timing): the per-run overhead of the study."""
    if train.empty or "train_wall_s" not in train or "wall_s" not in train:
        return []
    d = train[train["train_wall_s"].notna() & train["wall_s"].notna()]
    if "task" in d:  # a transfer row's wall time includes its (separate) pre-training run
        d = d[d["task"].fillna("train") == "train"]
    wall = float(d["wall_s"].sum())
    if d.empty or wall <= 0:
        return []
    frac = 1 - float(d["train_wall_s"].sum()) / wall
    return [f"Time outside the training loops (start-up, data, FLOP counting, evaluation, "
            f"timing): {100 * frac:.0f}% of the {wall / 60:.1f} min the {len(d)} runs took."]
