"""Findings of report.md about fits and dataset sizes: the power-law fits per family and the
best model at the smallest and largest training set (summary.py holds the rest)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from benchbench.families import label as family_label
from benchbench.report.compare import Z95, binomial_se, seed_spread
from benchbench.report.scaling import PowerLawFit


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
            seeded = np.isfinite(s_seed)  # one seed per point: nothing is called (issue 24)
            ok = seeded and _lead_called(r, r2, s_seed)
            clear.append(ok)
            why = "" if ok else (": within noise" if seeded else ": not called, one seed per point")
            s += (f"; the best {family_label(r2['family'])}, {r2['model']}, has "
                  f"{r2['acc'] * 100:.1f}%" + why + ")")
        out.append(s)
    s = "With " + "; with ".join(out) + "."
    if fams[0] != fams[1]:
        if all(clear):
            s += (f" The best family changes from {family_label(fams[0])} to "
                  f"{family_label(fams[1])} as data grows.")
        else:
            s += (" The data do not show that the best family changes with data: at least "
                  "one of the two leads is not called.")
    return [s]
