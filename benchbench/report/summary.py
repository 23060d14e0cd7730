"""The generated findings of report.md: sentences computed from the data, and plain
statements of what the data cannot answer. No number here is typed in by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd

from benchbench.families import label as family_label
from benchbench.report.compare import Z95, EqualCompute, binomial_se, seed_spread
from benchbench.report.cost_findings import (
    compute_axis_findings,
    measure_findings,
    overhead_findings,
    speed_findings,
)
from benchbench.report.load import Study
from benchbench.report.scaling import PowerLawFit
from benchbench.units import fmt_flops

TIE_PTS = 0.05  # differences below this many points are reported as a tie
NOISE_RULE = ("a difference is called only outside its 95% CI over seeds and outside "
              f"±{Z95} test-set binomial standard errors")


def _pts(v: float) -> str:
    return f"{abs(v) * 100:.1f}"


def selection_findings(study: Study, points: pd.DataFrame) -> list[str]:
    """Which accuracy every selection was made on (validation or test), and the lr sweep."""
    swept = int((points.get("n_swept", pd.Series(1)) > 1).sum())
    if points.empty or (len(points) < 2 and not swept):
        return []  # nothing was chosen
    sizes = points["train_size"].nunique() if "train_size" in points else 0
    what = ("frontiers" + (", best model per dataset size" if sizes > 1 else "")
            + (", learning rate" if swept else ""))
    if (points.get("selected_on", pd.Series("test")) == "validation").all():
        out = [f"Every selection ({what}) was made on validation accuracy (val_top1); the "
               f"accuracies shown are the test accuracies of what validation chose."]
    else:
        n_val = int(study.train["val_top1"].notna().sum()) if "val_top1" in study.train else 0
        why = ("No row has a validation accuracy (val_top1)" if n_val == 0 else
               f"Only {n_val} of {len(study.train)} rows have a validation accuracy (val_top1)")
        out = [f"{why}: every selection ({what}) was made on test accuracy, so the best "
               f"accuracies shown may be optimistic. Set data.val_split to select on validation."]
    if swept:
        on = "validation" if (points["selected_on"] == "validation").all() else "test"
        out.append(f"The learning rate is a swept axis: {swept} setting(s) kept the learning "
                   f"rate with the best {on} accuracy "
                   f"(of {int(points['n_swept'].max())} at most).")
    return out


def seeds_finding(points: pd.DataFrame, ec: EqualCompute | None = None) -> list[str]:
    if points.empty:
        return []
    n = points["n_seeds"]
    if n.max() <= 1:
        return ["Every point has a single seed: there are no confidence intervals, and "
                "differences are judged against the test-set noise alone (it ignores "
                "seed-to-seed variation). Run more seeds (seed=0,1,2) to get intervals."]
    out = []
    pooled = [f for f, how in (ec.spread if ec is not None else {}).items() if how == "pooled"]
    if pooled:
        out.append(f"{', '.join(family_label(f) for f in pooled)} ha{'s' if len(pooled) == 1 else 've'}"
                   f" no repeated seed: {'its' if len(pooled) == 1 else 'their'} intervals use "
                   f"the seed spread pooled over the other families (assumes similar seed noise).")
    seeded = points[n > 1]
    if len(points) <= 3:  # a few points: each one's seed mean and spread, said outright
        sizes = points["train_size"].nunique() > 1 if "train_size" in points else False
        for r in seeded.itertuples():
            vals = ", ".join(f"{100 * v:.1f}" for v in r.acc_values)
            name = f"{r.model} at {int(r.train_size):,} images" if sizes else r.model
            out.append(f"{name}: {100 * r.acc:.1f}% ± {100 * r.acc_std:.1f} points (mean ± "
                       f"s.d. over {r.n_seeds} seeds: {vals}).")
    single = int((n <= 1).sum())
    if single:
        out.append(f"{single} of {len(points)} points have a single seed; their intervals use "
                   f"the seed spread pooled over their family's points.")
    return out + ([f"In this summary {NOISE_RULE}."] if points["family"].nunique() > 1 else [])


def _pairs(ec: EqualCompute) -> pd.DataFrame:
    """ec.pairs with the judgement columns filled where a hand-built EqualCompute lacks them."""
    p = ec.pairs.copy()
    defaults = {"se_test": np.nan, "called": False, "a_beyond": False, "b_beyond": False,
                "mult_bound": np.nan, "mult_lo": np.nan, "mult_hi": np.nan}
    for c, v in defaults.items():
        if c not in p:
            p[c] = v
    if "mult_kind" not in p:
        p["mult_kind"] = np.where(np.isfinite(p["multiplier"].to_numpy(float)), "=", "")
    return p


def equal_compute_findings(ec: EqualCompute, level: float = 0.95) -> list[str]:
    out = []
    pairs = _pairs(ec)
    for (fa, fb), d in pairs.groupby(["family_a", "family_b"], sort=False):
        A, B = family_label(fa), family_label(fb)
        both = d[np.isfinite(d["diff"].to_numpy(float))]
        if both.empty:
            out.append(f"{A} and {B} share no compute budget: the data cannot compare them at "
                       f"equal compute.")
            continue
        measured = both[~(both["a_beyond"] & both["b_beyond"])]
        both = measured if len(measured) else both
        picks = [both.iloc[0]] + ([both.iloc[-1]] if len(both) > 1 else [])
        for r in picks:
            out.append(_diff_sentence(r, A, B, level, ec.last_run, fa, fb))
        out += _crossover_sentence(ec, both, fa, fb, A, B)
        out.append(_multiplier_sentence(d, A, B))
    return out


def _crossover_sentence(ec: EqualCompute, d: pd.DataFrame, fa: str, fb: str, A: str, B: str) -> list[str]:
    c = ec.crossovers
    if c.empty:
        return []
    r = c[(c["family_a"] == fa) & (c["family_b"] == fb)]
    if r.empty or not np.isfinite(r["crossover"].iloc[0]):
        return []
    r = r.iloc[0]
    x = float(r["crossover"])
    s = f"The {A} - {B} difference changes sign at about {fmt_flops(x)}"
    if np.isfinite(r["cross_lo"]):
        s += f" [95% CI {fmt_flops(r['cross_lo'])}, {fmt_flops(r['cross_hi'])}"
        s += f"; {r['cross_frac']:.0%} of bootstrap replicates change sign in the shared range]"
    elif np.isfinite(r["cross_frac"]):
        s += (f" (no CI: only {r['cross_frac']:.0%} of bootstrap replicates change sign in the "
              f"shared range)")
    else:
        s += " (no CI: no seed spread)"
    if r["n_changes"] > 1:
        s += f"; it changes sign {int(r['n_changes'])} times, this is the first"
    inside = d[d["called"] & ~d["a_beyond"] & ~d["b_beyond"]]  # both measured, none held flat
    below, above = inside[inside["budget"] < x], inside[inside["budget"] > x]
    established = (len(below) and len(above)
                   and np.sign(below["diff"].iloc[-1]) != np.sign(above["diff"].iloc[0]))
    if not established:
        s += "; but the differences on at least one side are within noise, so the data do not establish a crossover"
    return [s + "."]


def _bounds_text(bounds: pd.DataFrame) -> str:
    parts = []
    for k, g in bounds.groupby("mult_kind", sort=True):
        v = g["mult_bound"]
        rng = f"{v.iloc[0]:.2g}" if len(g) == 1 else f"{v.min():.2g}-{v.max():.2g}"
        parts.append(f"at {'most' if k == '<=' else 'least'} {rng}x at {len(g)} "
                     f"budget{'s' if len(g) > 1 else ''} ({_span(g['budget'])})")
    return "; ".join(parts)


def _multiplier_sentence(d: pd.DataFrame, A: str, B: str) -> str:
    """The compute multiplier B needs to match A: a geometric mean only over the budgets
    where it is read off both frontiers; bounds (a frontier's end) are said as bounds."""
    exact = d[(d["mult_kind"] == "=") & (d["multiplier"] > 0)]
    bounds = d[d["mult_kind"].isin(["<=", ">="]) & (d["mult_bound"] > 0)]
    bound_txt = _bounds_text(bounds)
    if exact.empty:
        if bounds.empty:
            return (f"No budget where {B}'s compute to reach {A}'s accuracy can be read or "
                    f"bounded from the rows: no compute multiplier for {B} vs {A}.")
        kinds = set(bounds["mult_kind"])
        why = (f"{B}'s smallest run already beats {A}" if kinds == {"<="} else
               f"{B}'s runs never reach {A}'s accuracy" if kinds == {">="} else
               f"{B}'s runs start above or end below {A}'s accuracy")
        return (f"{why} at the budgets compared, so the compute multiplier ({B}'s compute / "
                f"{A}'s to reach {A}'s accuracy) is only bounded: {bound_txt}.")
    m = exact["multiplier"].to_numpy(float)
    lo, hi = exact["mult_lo"].to_numpy(float), exact["mult_hi"].to_numpy(float)
    ci1 = ("; every 95% CI includes 1x" if np.isfinite(lo).all() and ((lo <= 1) & (hi >= 1)).all()
           else "" if np.isfinite(lo).any() else "; no CI (no seed spread)")
    rest = f"; elsewhere only bounds: {bound_txt}" if bound_txt else ""
    if len(m) == 1:
        return (f"Only at {fmt_flops(exact['budget'].iloc[0])} can the compute multiplier "
                f"be read off both frontiers: there {B} needs {m[0]:.2g}x {A}'s compute to "
                f"reach {A}'s accuracy{ci1}{rest}.")
    gm = float(np.exp(np.log(m).mean()))
    ratio = (f"{B}'s compute / {A}'s: geometric mean {gm:.2g} over the {len(m)} budgets where "
             f"both frontiers give it, {m.min():.2g}-{m.max():.2g} over "
             f"{_span(exact['budget'])}{ci1}{rest}")
    if 1 / 1.1 < gm < 1.1:
        return f"{B} needs about as much compute as {A} to reach {A}'s accuracy ({ratio})."
    how, factor = ("more", gm) if gm > 1 else ("less", 1 / gm)
    return f"{B} needs {factor:.2g}x {how} compute than {A} to reach {A}'s accuracy ({ratio})."


def _span(b: pd.Series) -> str:
    lo, hi = float(b.min()), float(b.max())
    return fmt_flops(lo) if lo == hi else f"{fmt_flops(lo)} to {fmt_flops(hi)}"


def _diff_sentence(r: pd.Series, A: str, B: str, level: float,
                   last_run: dict | None = None, fa: str = "", fb: str = "") -> str:
    at = f"At {fmt_flops(r['budget'])}"
    last_run = last_run or {}
    flat_txt = "".join(
        f" {F}'s last run is at {fmt_flops(last_run[f])}; its best is held flat beyond it."
        for F, f, bey in ((A, fa, r.get("a_beyond", False)), (B, fb, r.get("b_beyond", False)))
        if bey and f in last_run)
    sign = 1.0 if r["diff"] >= 0 else -1.0  # the interval is quoted for winner - loser
    lo, hi = sorted((sign * r["diff_lo"] * 100, sign * r["diff_hi"] * 100))
    has_ci = bool(np.isfinite(lo) and np.isfinite(hi))
    ci = f" [{level:.0%} CI {lo:.1f}, {hi:.1f}]" if has_ci else ""
    se = float(r.get("se_test", np.nan))
    if abs(r["diff"]) * 100 < TIE_PTS:
        return f"{at}, {A} and {B} tie ({r['acc_a'] * 100:.1f}%){ci}.{flat_txt}"
    win, lose = (A, B) if r["diff"] > 0 else (B, A)
    if bool(r.get("called", False)):
        return f"{at}, {win} beats {lose} by {_pts(r['diff'])} points{ci}.{flat_txt}"
    why = []
    if has_ci and lo <= 0 <= hi:
        why.append(f"the {level:.0%} CI [{lo:.1f}, {hi:.1f}] includes 0")
    if np.isfinite(se) and abs(r["diff"]) <= Z95 * se:
        why.append(f"under {Z95} test-set standard errors, ±{Z95 * se * 100:.1f} points")
    if not (has_ci or np.isfinite(se)):
        why.append("no CI (one seed per point) and no test-set size")
    return (f"{at}, {win} is ahead of {lose} by {_pts(r['diff'])} points, within noise: "
            f"{'; '.join(why)}.{flat_txt}")


def leader_findings(ec: EqualCompute) -> list[str]:
    """Which family has the best interpolated accuracy at each budget, as runs of budgets:
    a family is named best only where another family has a value and every gap to it is
    called; "only X measured" where X is alone."""
    b = ec.best[np.isfinite(ec.best["acc"].to_numpy(float))]
    if b.empty or b["family"].nunique() < 2:
        return []
    pairs = _pairs(ec)
    status = []
    for budget, g in b.groupby("budget", sort=True):
        if len(g) == 1:
            status.append((budget, ("only", g["family"].iloc[0])))
            continue
        lead = g.loc[g["acc"].idxmax(), "family"]
        near = [lead]
        for f in g["family"]:
            r = pairs[(pairs["budget"] == budget) & (
                ((pairs["family_a"] == lead) & (pairs["family_b"] == f))
                | ((pairs["family_a"] == f) & (pairs["family_b"] == lead)))]
            if f != lead and not (len(r) and bool(r["called"].iloc[0])):
                near.append(f)
        status.append((budget, ("best", lead) if len(near) == 1 else ("tie", tuple(near))))
    segs: list[tuple[tuple, float, float]] = []
    for budget, st in status:
        if segs and segs[-1][0] == st:
            segs[-1] = (st, segs[-1][1], budget)
        else:
            segs.append((st, budget, budget))

    def name(st) -> str:
        if st[0] == "only":
            return f"only {family_label(st[1])} measured"
        if st[0] == "best":
            return family_label(st[1])
        return f"no clear best ({', '.join(family_label(f) for f in st[1])} within noise)"

    parts = [name(st) + (f" at {fmt_flops(a)}" if a == z else f" from {fmt_flops(a)} to {fmt_flops(z)}")
             for st, a, z in segs]
    s = "Best family by budget: " + "; then ".join(parts) + "."
    flat = sorted({f for f in b.loc[b["beyond"], "family"]} if "beyond" in b else set())
    if flat and ec.last_run:
        s += (" Past its last run a family keeps its best: " + ", ".join(
            f"{family_label(f)}'s last run is at {fmt_flops(ec.last_run[f])}" for f in flat
            if f in ec.last_run) + ".")
    return [s]


def fit_findings(fits: dict[str, PowerLawFit], what: str, unit: str) -> list[str]:
    out = []
    for f, fit in fits.items():
        F = family_label(f)
        if not fit.fitted:
            out.append(f"{F} error vs {what}: no fit ({'; '.join(fit.reasons)}).")
            continue
        if not fit.trustworthy:  # no exponent quoted: a reader would cite it anyway
            out.append(f"{F} error vs {what}: a power law was fitted but is not trustworthy "
                       f"({'; '.join(fit.reasons)}), so no exponent is reported.")
            continue
        lo, hi = fit.ci("b")
        ci = f" [95% CI {lo:.2g}, {hi:.2g}]" if np.isfinite(lo) else ""
        s = (f"{F} error vs {what}: E = a({unit} + d)^-b + c with b = {fit.b:.2g}{ci}, "
             f"floor c = {fit.c * 100:.1f}%")
        if np.isfinite(fit.heldout_pred):
            s += (f"; fitted without the largest {what} it predicts {fit.heldout_pred * 100:.1f}% "
                  f"error there vs {fit.heldout_obs * 100:.1f}% observed")
        out.append(s + ".")
    return out


def _lead_called(a: pd.Series, b: pd.Series, s_seed: float) -> bool:
    """Is a's test accuracy above b's by more than 1.96 standard errors of the difference
    (test-set binomial noise plus, when known, the pooled seed spread)?"""
    var = float(np.nansum([binomial_se(a["acc"], a.get("n_test", np.nan)) ** 2,
                           binomial_se(b["acc"], b.get("n_test", np.nan)) ** 2]))
    if np.isfinite(s_seed):
        var += s_seed**2 * (1 / a["n_seeds"] + 1 / b["n_seeds"])
    return var > 0 and a["acc"] - b["acc"] > Z95 * np.sqrt(var)


def dataset_findings(points: pd.DataFrame) -> list[str]:
    """Best model at the smallest and the largest dataset size (chosen on validation when
    there is one), and whether the best family changes, said only when both leads are
    outside the noise."""
    pts = points[points["train_size"].notna()]
    sizes = np.sort(pts["train_size"].unique())
    if len(sizes) < 2:
        return []
    by = "sel" if "sel" in pts and pts["sel"].notna().all() else "acc"
    s_seed = seed_spread(list(pts["acc_values"]))[0] if "acc_values" in pts else np.nan
    out, fams, clear = [], [], []
    for n in (sizes[0], sizes[-1]):
        d = pts[pts["train_size"] == n]
        per_fam = d.loc[d.groupby("family")[by].idxmax()].sort_values(by, ascending=False)
        r = per_fam.iloc[0]
        fams.append(r["family"])
        s = (f"{int(n)} training images: best model {r['model']} "
             f"({family_label(r['family'])}, {r['acc'] * 100:.1f}%")
        if len(per_fam) == 1:
            s += ", the only family measured)"
            clear.append(False)
        else:
            r2 = per_fam.iloc[1]
            ok = _lead_called(r, r2, s_seed)
            clear.append(ok)
            s += (f"; the best {family_label(r2['family'])}, {r2['model']}, has "
                  f"{r2['acc'] * 100:.1f}%" + ("" if ok else ": within noise") + ")")
        out.append(s)
    s = "With " + "; with ".join(out) + "."
    if fams[0] != fams[1]:
        if all(clear):
            s += (f" The best family changes from {family_label(fams[0])} to "
                  f"{family_label(fams[1])} as data grows.")
        else:
            s += (" The data do not show that the best family changes with data: at least "
                  "one of the two leads is within noise.")
    return [s]


def findings(study: Study, points: pd.DataFrame, ec: EqualCompute | None,
             fits_compute: dict[str, PowerLawFit], fits_data: dict[str, PowerLawFit],
             data_points: pd.DataFrame | None = None) -> list[str]:
    """All findings, most important first."""
    if points.empty:
        return (["No ok train row with an accuracy: nothing to compare yet."]
                + measure_findings(study.measure))
    out = selection_findings(study, points) + seeds_finding(points, ec)
    if points["family"].nunique() < 2:
        out.append(f"Only one family ({family_label(points['family'].iloc[0])}) has ok runs: "
                   f"no comparison between families.")
    if ec is not None:
        out += compute_axis_findings(points, study.compute)
        out += equal_compute_findings(ec)
        out += leader_findings(ec)
    out += fit_findings(fits_compute, "compute", "C")
    out += dataset_findings(points if data_points is None else data_points)
    out += fit_findings(fits_data, "dataset size", "N")
    out += measure_findings(study.measure)
    out += speed_findings(study)
    out += overhead_findings(study.train)
    return out
