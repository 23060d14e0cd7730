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
from benchbench.report.evidence import COMPARED
from benchbench.report.load import Study
from benchbench.report.scaling import PowerLawFit
from benchbench.report.tuning import edge_findings
from benchbench.units import fmt_flops

TIE_PTS = 0.05  # differences below this many points are reported as a tie
NOISE_RULE = ("a difference is stated only where both families were run at the budget (a run "
              "within 25%, or between runs at most 4x apart), and called only with 2+ seeds "
              "per point (or --seed-sd) and outside the seed and test-set binomial noise at "
              "a family-wise 95% level (Holm over each pair's budgets)")


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
    given = ec is not None and ec.seed_sd is not None
    if given:
        head = [f"Seed noise: the user's estimate, {100 * ec.seed_sd:.2g} points s.d. per seed "
                f"(--seed-sd), stands in for the seed spread in every interval and call."]
    else:
        head = []
    if n.max() <= 1:
        if given:
            return head + [f"In this summary {NOISE_RULE}."]
        return ["Every point has a single seed: no difference is called (seed-to-seed "
                "variation is unknown). Run more seeds (seed=0,1,2), or give "
                "benchbench-report --seed-sd POINTS (a seed s.d. in accuracy points)."]
    out = head
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
    if single and not given:
        out.append(f"{single} of {len(points)} points have a single seed; their intervals use "
                   f"the seed spread pooled over their family's points, and no difference resting "
                   f"on them is called.")
    return out + ([f"In this summary {NOISE_RULE}."] if points["family"].nunique() > 1 else [])


def _pairs(ec: EqualCompute) -> pd.DataFrame:
    """ec.pairs with the judgement columns filled where a hand-built EqualCompute lacks them."""
    p = ec.pairs.copy()
    defaults = {"se_test": np.nan, "called": False, "a_beyond": False, "b_beyond": False,
                "mult_bound": np.nan, "mult_lo": np.nan, "mult_hi": np.nan, "p": np.nan,
                "basis_a": "run", "basis_b": "run", "mult_read": True, "bound_called": False,
                "size_a": [()] * len(p), "size_b": [()] * len(p)}
    for c, v in defaults.items():
        if c not in p:
            p[c] = v
    if "compared" not in p:
        p["compared"] = (p["basis_a"].isin(COMPARED) & p["basis_b"].isin(COMPARED)
                         & np.isfinite(p["diff"].to_numpy(float)))
    if "mult_kind" not in p:
        p["mult_kind"] = np.where(np.isfinite(p["multiplier"].to_numpy(float)), "=", "")
    return p


def _list(budgets) -> str:
    b = [fmt_flops(float(v)) for v in budgets]
    return b[0] if len(b) == 1 else ", ".join(b[:-1]) + " and " + b[-1]


def _no_run_sentences(d: pd.DataFrame, ec: EqualCompute, fa: str, fb: str,
                      said: set | None = None) -> list[str]:
    """Where a family was not run: said instead of a comparison (once per family)."""
    out = []
    said = set() if said is None else said
    for f, col in ((fa, "basis_a"), (fb, "basis_b")):
        if f in said:
            continue
        said.add(f)
        F = family_label(f)
        held = d[d[col] == "held"]
        end, last = ec.front_end.get(f, np.nan), ec.last_run.get(f, np.nan)
        if len(held):
            more = (f" (its runs up to {fmt_flops(last)} did no better)" if last > end * 1.05
                    else "")
            out.append(f"{F} was not run beyond {fmt_flops(end)} with a better result{more}: "
                       f"at {_list(held['budget'])} its value is that run held flat, so {F} "
                       f"is not compared there." if more else
                       f"{F} was not run beyond {fmt_flops(end)}: at {_list(held['budget'])} "
                       f"its value is that run held flat, so {F} is not compared there.")
        gap = d[(d[col] == "none") & (d["budget"] >= ec.first_run.get(f, np.inf))
                & (d["budget"] <= ec.front_end.get(f, -np.inf))]
        if len(gap):
            out.append(f"{F}'s runs around {_list(gap['budget'])} are more than 4x apart in "
                       f"compute: not compared there.")
    return out


def _size_txt(r: pd.Series, A: str, B: str) -> str:
    """The training-set sizes behind the two values, when they differ (a confound)."""
    sa, sb = tuple(r.get("size_a") or ()), tuple(r.get("size_b") or ())
    if not sa or not sb or sa == sb:
        return ""
    def n(s):
        return " and ".join(f"{int(v):,}" for v in s)
    return (f" Confound: {A}'s value rests on {n(sa)} training images and {B}'s on {n(sb)}, "
            f"so the gap mixes the model with the data size.")


def equal_compute_findings(ec: EqualCompute, level: float = 0.95) -> list[str]:
    out = []
    said: set = set()  # families whose unrun budgets were said
    pairs = _pairs(ec)
    for (fa, fb), d in pairs.groupby(["family_a", "family_b"], sort=False):
        A, B = family_label(fa), family_label(fb)
        comp = d[d["compared"].astype(bool)]
        out += _family_size_sentence(ec, fa, fb, A, B)
        if comp.empty:
            out.append(f"{A} and {B} were not both run at any budget (within 25%, or between "
                       f"runs at most 4x apart): the data cannot compare them at equal compute.")
            out += _no_run_sentences(d, ec, fa, fb, said)
            continue
        tested = int(np.isfinite(comp["p"].to_numpy(float)).sum())
        head = (f"{A} vs {B}: compared at {len(comp)} budget{'s' if len(comp) > 1 else ''} "
                f"where both were run ({_list(comp['budget'])})")
        if tested:
            head += (f"; differences are called at a family-wise {level:.0%} level (Holm over "
                     f"{'the ' + str(tested) + ' budgets' if tested > 1 else '1 budget'}).")
        else:
            head += ("; nothing is called: fewer than 2 seeds per point and no seed noise "
                     "estimate (run seed=0,1,2 or give --seed-sd POINTS).")
        out.append(head)
        out += _no_run_sentences(d, ec, fa, fb, said)
        picks = [comp.iloc[0]] + ([comp.iloc[-1]] if len(comp) > 1 else [])
        for r in picks:
            out.append(_diff_sentence(r, A, B, level, tested=tested))
        out += _crossover_sentence(ec, comp, fa, fb, A, B)
        out += _multiplier_sentence(comp, A, B)
    return out


def _family_size_sentence(ec: EqualCompute, fa: str, fb: str, A: str, B: str) -> list[str]:
    """Compute tied to training-set size for one family and not the other."""
    na, nb = len(ec.sizes.get(fa, ())), len(ec.sizes.get(fb, ()))
    if (na > 1) == (nb > 1) or not (na and nb):
        return []
    varied, fixed = (A, B) if na > 1 else (B, A)
    return [f"Confound: {varied}'s compute varies with its training-set size and {fixed}'s "
            f"does not, so {A} - {B} differences mix data size with compute."]


def _crossover_sentence(ec: EqualCompute, d: pd.DataFrame, fa: str, fb: str, A: str, B: str) -> list[str]:
    """Said only where the sign change is established: called differences of opposite sign
    on both sides, and a (stable) bootstrap CI."""
    c = ec.crossovers
    if c.empty:
        return []
    r = c[(c["family_a"] == fa) & (c["family_b"] == fb)]
    if r.empty or not np.isfinite(r["crossover"].iloc[0]) or not np.isfinite(r["cross_lo"].iloc[0]):
        return []
    r = r.iloc[0]
    x = float(r["crossover"])
    inside = d[d["called"].astype(bool)]
    below, above = inside[inside["budget"] < x], inside[inside["budget"] > x]
    if not (len(below) and len(above)
            and np.sign(below["diff"].iloc[-1]) != np.sign(above["diff"].iloc[0])):
        return []
    s = (f"The {A} - {B} difference changes sign at about {fmt_flops(x)} [95% CI "
         f"{fmt_flops(r['cross_lo'])}, {fmt_flops(r['cross_hi'])}; {r['cross_frac']:.0%} of "
         f"bootstrap replicates change sign in the shared range]")
    if r["n_changes"] > 1:
        s += f"; it changes sign {int(r['n_changes'])} times, this is the first"
    return [s + "."]


def _multiplier_sentence(d: pd.DataFrame, A: str, B: str) -> list[str]:
    """The compute multiplier B needs to match A, at compared budgets only: exact values
    with a CI, and bounds only where the gap they rest on is called and they say something
    (at most below 1x, at least above 1x)."""
    exact = d[(d["mult_kind"] == "=") & (d["multiplier"] > 0) & d["mult_read"].astype(bool)
              & np.isfinite(d["mult_lo"].to_numpy(float))]
    bounds = d[d["bound_called"].astype(bool)
               & (((d["mult_kind"] == "<=") & (d["mult_bound"] < 1))
                  | ((d["mult_kind"] == ">=") & (d["mult_bound"] > 1)))]
    out = []
    if len(bounds):
        parts = []
        for k, g in bounds.groupby("mult_kind", sort=True):
            v = g["mult_bound"]
            rng = f"{v.iloc[0]:.2g}" if len(g) == 1 else f"{v.min():.2g}-{v.max():.2g}"
            why = (f"{B}'s smallest run already beats {A}" if k == "<=" else
                   f"{B}'s largest run stays below {A}")
            parts.append(f"at {_list(g['budget'])} {why}, so {B} needs at "
                         f"{'most' if k == '<=' else 'least'} {rng}x {A}'s compute to match it")
        out.append("; ".join(parts)[:1].upper() + "; ".join(parts)[1:] + ".")
    if exact.empty:
        return out
    m = exact["multiplier"].to_numpy(float)
    lo, hi = exact["mult_lo"].to_numpy(float), exact["mult_hi"].to_numpy(float)
    if ((lo <= 1) & (hi >= 1)).all():
        return out + [f"Where {B}'s compute to match {A} can be read off both frontiers "
                      f"({_list(exact['budget'])}: {', '.join(f'{v:.2g}x' for v in m)}), every "
                      f"95% CI includes 1x: the data do not show either needing more compute."]
    gm = float(np.exp(np.log(m).mean()))
    ci = "; ".join(f"{fmt_flops(b)}: {v:.2g}x [95% CI {a:.2g}, {z:.2g}]"
                   for b, v, a, z in zip(exact["budget"], m, lo, hi))
    over = f"geometric mean over {len(m)} budget{'s' if len(m) > 1 else ''}; {ci}"
    if 1 / 1.1 < gm < 1.1:
        return out + [f"{B} needs about as much compute as {A} to reach {A}'s accuracy ({over})."]
    how, factor = ("more", gm) if gm > 1 else ("less", 1 / gm)
    return out + [f"{B} needs {factor:.2g}x {how} compute than {A} to reach {A}'s accuracy "
                  f"({over})."]


def _diff_sentence(r: pd.Series, A: str, B: str, level: float,
                   last_run: dict | None = None, fa: str = "", fb: str = "",
                   tested: int = 0) -> str:
    at = f"At {fmt_flops(r['budget'])}"
    sign = 1.0 if r["diff"] >= 0 else -1.0  # the interval is quoted for winner - loser
    lo, hi = sorted((sign * r["diff_lo"] * 100, sign * r["diff_hi"] * 100))
    has_ci = bool(np.isfinite(lo) and np.isfinite(hi))
    ci = f" [{level:.0%} CI {lo:.1f}, {hi:.1f}]" if has_ci else ""
    conf = _size_txt(r, A, B)
    if abs(r["diff"]) * 100 < TIE_PTS:
        return f"{at}, {A} and {B} tie ({r['acc_a'] * 100:.1f}%){ci}.{conf}"
    win, lose = (A, B) if r["diff"] > 0 else (B, A)
    if bool(r.get("called", False)):
        return f"{at}, {win} beats {lose} by {_pts(r['diff'])} points{ci}.{conf}"
    p = float(r.get("p", np.nan))
    if np.isfinite(p):
        why = (f"p = {p:.2g} with seed and test-set noise, not called at the family-wise "
               f"{level:.0%} level" + (f" (Holm over {tested} budgets)" if tested > 1 else ""))
    else:  # not judged at all: "within noise" would claim a noise estimate there is not
        return (f"{at}, {win} is ahead of {lose} by {_pts(r['diff'])} points{ci}; not called: "
                f"one seed per point and no --seed-sd.{conf}")
    return (f"{at}, {win} is ahead of {lose} by {_pts(r['diff'])} points{ci}, within noise: "
            f"{why}.{conf}")


def leader_findings(ec: EqualCompute) -> list[str]:
    """Which family has the best accuracy at each budget, as runs of budgets: a family is
    named best only where another family was run there and every gap to it is called;
    "only X has a frontier run" where X alone was (the others held flat or absent)."""
    b = ec.best[np.isfinite(ec.best["acc"].to_numpy(float))]
    if "basis" in b:
        b = b[b["basis"].isin(COMPARED)]
    if b.empty or ec.best["family"].nunique() < 2:
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
            return f"only {family_label(st[1])} has a frontier run"
        if st[0] == "best":
            return family_label(st[1])
        return f"no clear best ({', '.join(family_label(f) for f in st[1])} not called apart)"

    parts = [name(st) + (f" at {fmt_flops(a)}" if a == z else f" from {fmt_flops(a)} to {fmt_flops(z)}")
             for st, a, z in segs]
    return ["Best family by budget: " + "; then ".join(parts) + "."]


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
    out = selection_findings(study, points) + edge_findings(study.train) + seeds_finding(points, ec)
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
