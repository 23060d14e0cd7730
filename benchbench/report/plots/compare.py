"""The equal-compute figure: best accuracy per family at each budget, gaps, multipliers."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from benchbench import families
from benchbench.report.compare import EqualCompute
from benchbench.report.evidence import COMPARED
from benchbench.report.load import families_in
from benchbench.report.plots.common import (
    PAIR_COLORS,
    Plot,
    chance_line,
    figure,
    flops_axis,
    flops_note,
    legend_entries,
    pad,
    save,
)

# Multiplier ticks people read at a glance; the panel shows those inside its range.
OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}  # legends never cover data
MULT_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 20, 50, 100)


def equal_compute_plot(ec: EqualCompute, out: Path, formats: Sequence[str],
                       metric_label: str = "top-1", chance: float | None = None,
                       compute: str = "train_flops") -> Plot:
    """Best accuracy per family at each budget, pairwise differences and compute multipliers."""
    plot = Plot("equal_compute", "Equal-compute comparison")
    p = ec.pairs[np.isfinite(ec.pairs["diff"].to_numpy(float))]
    if p.empty:
        plot.skipped = ("fewer than two families" if ec.pairs.empty else
                        "no budget lies inside the compute range of two families")
        return plot
    fig = figure(8.2, 8.0)
    ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True)
    b = ec.best[np.isfinite(ec.best["acc"].to_numpy(float))]
    for f in families_in(b):
        d = b[b["family"] == f].sort_values("budget")
        color, marker, _ = families.style(f)
        run, held = held_split(d)
        err = None
        if ec.bootstrapped and len(run):
            err = np.vstack([(run["acc"] - run["acc_lo"]) * 100, (run["acc_hi"] - run["acc"]) * 100])
            err = np.nan_to_num(np.clip(err, 0, None))
        if len(run):
            ax1.errorbar(run["budget"], run["acc"] * 100, yerr=err, fmt=marker + "-", color=color,
                         label=families.label(f))
        if len(held):  # past the last run: the best held flat, not measured
            hx = np.concatenate([run["budget"].tail(1), held["budget"]])
            hy = np.concatenate([run["acc"].tail(1), held["acc"]]) * 100
            ax1.plot(hx, hy, "--", color=color, lw=1.2,
                     label=f"{families.label(f)}: held flat past its frontier")
    ax1.set_ylabel(f"best {metric_label} at budget [%]")
    allp = ec.pairs
    pairs = list(dict.fromkeys(zip(p["family_a"], p["family_b"])))
    for k, (fa, fb) in enumerate(pairs):
        d = p[(p["family_a"] == fa) & (p["family_b"] == fb)]
        color = PAIR_COLORS[k % len(PAIR_COLORS)]
        shift = 10 ** (0.015 * (k - (len(pairs) - 1) / 2))  # side by side, not on top
        lab = f"{families.label(fa)} - {families.label(fb)}"
        comp = d[d["compared"].astype(bool)] if "compared" in d else d
        other = d.drop(comp.index)
        if len(comp):
            err = _err(comp["diff"], comp["diff_lo"], comp["diff_hi"], 100)
            ax2.errorbar(comp["budget"] * shift, comp["diff"] * 100, yerr=err, fmt="o-",
                         color=color, label=lab)
        if len(other):  # one family held flat there: a gap of no measured pair
            ax2.plot(other["budget"] * shift, other["diff"] * 100, "o", mfc="none", ls="none",
                     color=color, label=f"{lab}: not compared (held flat)")
        dm = comp[np.isfinite(comp["multiplier"].to_numpy(float))]
        if not dm.empty:
            ax3.errorbar(dm["budget"] * shift, dm["multiplier"],
                         yerr=_err(dm["multiplier"], dm["mult_lo"], dm["mult_hi"], 1), fmt="o-",
                         color=color, label=f"{families.label(fb)} to match {families.label(fa)}")
        da = allp[(allp["family_a"] == fa) & (allp["family_b"] == fb)]
        if "basis_a" in da:  # a bound on matching a value held flat bounds nothing
            da = da[da["basis_a"].isin(COMPARED)]
        for kind, marker, word in (("<=", "v", "at most"), (">=", "^", "at least")):
            db = da[(da["mult_kind"] == kind) & np.isfinite(da["mult_bound"].to_numpy(float))]
            if not db.empty:  # a frontier ends: only a bound, drawn open and pointing its way
                ax3.plot(db["budget"] * shift, db["mult_bound"], marker, mfc="none", ls="none",
                         color=color, label=f"{families.label(fb)} to match "
                                            f"{families.label(fa)}: {word}")
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_ylabel("difference [points]")
    ax2.legend(**OUTSIDE)
    chance_words = chance_line(ax1, chance)
    ax1.legend(*legend_entries(ax1), **OUTSIDE)
    for ax in (ax1, ax2, ax3):
        pad(ax)
    ax3.axhline(1, color="black", lw=0.8)
    _multiplier_axis(ax3, allp)
    ax3.set_ylabel("compute multiplier [x]")
    if ax3.get_legend_handles_labels()[0]:  # the 1x line alone carries no label
        ax3.legend(**OUTSIDE)
    else:
        ax3.text(0.5, 0.75, "no budget where one family reaches another's accuracy",
                 transform=ax3.transAxes, ha="center", va="center", fontsize=9, color="0.4")
    flops_axis(ax3, "x")
    what = "training" if compute == "train_flops" else "pre-training"
    ax3.set_xlabel(f"{what[:1].upper() + what[1:]} compute budget [FLOPs]")
    ci = ("error bars: 95% CI of the seed mean at the budget (t interval over seeds"
          + (", seed s.d. given with --seed-sd" if ec.seed_sd is not None else "")
          + "; not the ±1 s.d. of the accuracy-vs-compute figure)" if ec.bootstrapped
          else "one seed per point, so no CI")
    plot.files = save(fig, out, plot.name, formats)
    plot.caption = (f"Top: each family's best {metric_label} at each {what} budget (interpolated "
                    f"on its frontier in log-compute, never extrapolated below its first run; "
                    f"dashed: past its last frontier run, its best held flat, not measured)"
                    + (f"; {chance_words}" if chance_words else "")
                    + "; middle: pairwise difference (open circles: not compared, one family "
                    "held flat); bottom: how many times the budget family B "
                    f"needs to match family A (open triangles: only a bound, where a frontier "
                    f"ends; pointing down: at most, up: at least); {ci}; {flops_note()}.")
    return plot


def held_split(d: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A family's budgets with a measured basis (run, interpolated) and those held flat."""
    if "basis" not in d:
        return d, d.iloc[:0]
    held = d["basis"] == "held"
    return d[~held], d[held]


def _multiplier_axis(ax, p: pd.DataFrame) -> None:
    """Log scale padded round the multipliers and 1x, ticked at MULT_TICKS in range."""
    cols = [c for c in ("multiplier", "mult_lo", "mult_hi", "mult_bound") if c in p]
    vals = np.concatenate([p[c].to_numpy(float) for c in cols])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    lo, hi = min([1.0, *vals]), max([1.0, *vals])
    ax.set_yscale("log")
    ax.set_ylim(lo / 1.25, hi * 1.25)
    ticks = [t for t in MULT_TICKS if lo / 1.25 <= t <= hi * 1.25]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _err(v: pd.Series, lo: pd.Series, hi: pd.Series, scale: float):
    e = np.vstack([(v - lo).to_numpy(float), (hi - v).to_numpy(float)]) * scale
    if not np.isfinite(e).any():
        return None
    return np.nan_to_num(np.clip(e, 0, None))
