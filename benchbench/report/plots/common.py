"""Shared pieces of the report's figures: the Plot record, model colours, saving, axes.

Figures use matplotlib's object API on the Agg canvas (no pyplot state). Each figure takes
seed-aggregated points (or measure rows), writes `<name>.<fmt>` for each format and returns
a `Plot`; with no data it writes nothing and returns the reason instead. Seeds of one point
are drawn as their mean with a +-1 s.d. error bar; families are coloured by FAMILIES.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    NullLocator,
    ScalarFormatter,
)

from benchbench import families
from benchbench.report.load import families_in
from benchbench.report.scaling import PowerLawFit
from benchbench.units import FLOPS_NOTE, fmt_count

STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7.5,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linewidth": 0.5, "axes.spines.top": False, "axes.spines.right": False,
    "lines.markersize": 5, "errorbar.capsize": 2, "legend.frameon": False,
    "svg.hashsalt": "benchbench", "savefig.dpi": 150,
}
PAIR_COLORS = ("tab:purple", "tab:brown", "tab:cyan", "tab:olive", "tab:pink", "tab:gray")
DEFAULT_FORMATS = ("png", "pdf")
NO_TRAIN = "no ok train rows with an accuracy"
MARGINS = (0.06, 0.1)  # room round the data so end markers are never cut by the axes
CHANCE_REACH = 0.4  # draw the chance line when it lies within 40% of the data's span below it


@dataclass
class Plot:
    name: str
    title: str
    caption: str = ""
    files: list[Path] = field(default_factory=list)
    skipped: str | None = None  # why nothing was drawn

    @property
    def png(self) -> Path | None:
        return next((p for p in self.files if p.suffix == ".png"), None)


def model_colors(df: pd.DataFrame) -> dict[str, str]:
    """One colour per model, shades of its family's colour (ordered by params)."""
    out = {}
    for f in families_in(df):
        d = df[df["family"] == f]
        order = d.groupby("model")["params"].median().sort_values(na_position="last").index
        cmap = matplotlib.colormaps[families.style(f)[2]]
        shades = np.linspace(0.5, 0.95, len(order)) if len(order) > 1 else [0.75]
        out.update({m: matplotlib.colors.to_hex(cmap(s)) for m, s in zip(order, shades)})
    return out


EXTRA_MARKERS = ("D", "v", "P", "X", "*", "h", "<", ">", "p", "d")  # after the family's own


def model_markers(df: pd.DataFrame) -> dict[str, str]:
    """One marker per model: the family's marker for its first model (by params), then
    others, so two models of one family (ViT-B/16 and ViT-B/32) never share a marker."""
    out = {}
    for f in families_in(df):
        own = families.style(f)[1]
        extra = [m for m in EXTRA_MARKERS if m != own]
        ms = models_in(df[df["family"] == f])
        out.update({m: own if i == 0 else extra[(i - 1) % len(extra)] for i, m in enumerate(ms)})
    return out


def frontier_dips(fr: pd.DataFrame) -> bool:
    """True when a frontier chosen on validation goes down in the accuracy it is drawn at."""
    return ("selected_on" in fr and (fr["selected_on"] == "validation").any()
            and bool((np.diff(fr["acc"].to_numpy(float)) < -1e-12).any()))


DIP_WORDS = ("chosen on validation accuracy and drawn at test accuracy, so a frontier can go "
             "down where a run that was better on validation is worse on test")


def models_in(df: pd.DataFrame) -> list[str]:
    d = df.assign(_f=df["family"].map(families.sort_key))
    d = d.groupby("model").agg(f=("_f", "first"), p=("params", "median")).reset_index()
    return list(d.sort_values(["f", "p", "model"], na_position="last")["model"])


def figure(w: float = 6.4, h: float = 4.2, **kw) -> Figure:
    return Figure(figsize=(w, h), layout="constrained", **kw)


def save(fig: Figure, out: Path, name: str, formats: Sequence[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = out / f"{name}.{fmt}"
        meta = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt, {})
        fig.savefig(p, format=fmt, metadata=meta)  # no dates: re-running gives the same file
        paths.append(p)
    return paths


def legend_entries(*axes) -> tuple[list, list]:
    """Handles and labels of the axes, each label once, the chance line last."""
    handles: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    return chance_last(list(handles.values()), list(handles))


def chance_last(handles: list, labels: list) -> tuple[list, list]:
    """The chance line's entry moved to the end (stable: the others keep their order)."""
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("chance"))
    return [handles[i] for i in order], [labels[i] for i in order]


def merged_legend(fig: Figure, axes) -> None:
    """One legend right of all panels, each label once."""
    fig.legend(*legend_entries(*axes), loc="outside right upper")


def yerr(std: pd.Series) -> np.ndarray:
    return np.nan_to_num(std.to_numpy(float) * 100, nan=0.0)


def log2_ticks(ax, values: Sequence[float], axis: str = "x") -> None:
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=2)
    a.set_major_locator(FixedLocator(sorted(set(values))))
    a.set_minor_locator(NullLocator())
    a.set_major_formatter(ScalarFormatter())


def plain_log(ax, which: str = "x") -> None:
    """Label a log axis 0.5, 1, 2, 5 instead of 5x10^-1 when it spans under 3 decades of
    human-sized numbers (GiB, hours, multipliers); wider or huge ranges keep 10^k."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    if lo <= 0 or hi / lo > 1e3 or lo < 1e-3 or hi > 1e5:
        return
    subs = (1.0, 2.0, 5.0) if hi / lo >= 30 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def subject(label: str) -> str:
    """'top-1 accuracy [%] on x' -> 'Top-1 accuracy' (a caption's subject)."""
    w = label.split(" [")[0]
    return w[:1].upper() + w[1:]


def seed_note(points: pd.DataFrame) -> str:
    n = points["n_seeds"]
    if len(n) == 0 or n.max() <= 1:
        return "one seed per point, so no error bars"
    lo, hi = int(n.min()), int(n.max())
    seeds = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return f"points are the mean of {seeds} seeds with ±1 standard deviation as error bars"


def draw_fit(ax, fit: PowerLawFit | None, color: str, to_y=lambda e: 100 * (1 - e)) -> str | None:
    """Draw a fit: a trustworthy one with its 95% band (kept inside the data's y-range), an
    untrustworthy one as a thin faded line with no band. Returns 'trusted', 'untrusted' or None."""
    if fit is None or not fit.fitted:
        return None
    xs = np.geomspace(fit.x_range[0], fit.x_range[1], 100)
    if not fit.trustworthy:
        ax.plot(xs, to_y(fit.predict(xs)), color=color, ls=":", lw=1.0, alpha=0.45)
        return "untrusted"
    lo, hi = np.clip(fit.band(xs), 0.0, 1.0)  # an error rate: a band past 0..100% means nothing
    if np.isfinite(lo).all():
        ylim = ax.get_ylim()
        ax.fill_between(xs, to_y(hi), to_y(lo), color=color, alpha=0.12, lw=0)
        ax.set_ylim(ylim)  # the band never rescales the plot
    ax.plot(xs, to_y(fit.predict(xs)), color=color, ls=":", lw=1.5)
    return "trusted"


def fit_legend(kinds: set[str | None], handles: list, labels: list, what: str = "fit") -> None:
    """Legend entries for the kinds of fit that were drawn, and only those."""
    if "trusted" in kinds:
        handles.append(Line2D([], [], color="gray", ls=":", lw=1.5))
        labels.append(f"{what}\nwith 95% band")
    if "untrusted" in kinds:
        handles.append(Line2D([], [], color="gray", ls=":", lw=1.0, alpha=0.45))
        labels.append(f"{what}\n(not trustworthy: no band)")


def chance_line(ax, chance: float | None) -> str:
    """A dash-dot line at chance accuracy (in %) when it lies near the data; returns the
    caption's words for it ('' when there is no chance level)."""
    if chance is None or not np.isfinite(chance):
        return ""
    y = 100 * chance
    lo, hi = ax.dataLim.y0, ax.dataLim.y1
    if not np.isfinite(lo) or y < lo - CHANCE_REACH * max(hi - lo, 1.0):
        return f"chance ({y:.3g}%) lies below the plotted range"
    ax.axhline(y, color="0.45", ls="-.", lw=0.9, zorder=0, label=f"chance ({y:.3g}%)")
    return f"dash-dot: chance ({y:.3g}%, 1/classes)"


def pad(ax) -> None:
    """Margins round the data, and markers drawn over the axes edge rather than cut by it."""
    ax.margins(*MARGINS)
    for artist in ax.lines:
        artist.set_clip_on(False)


def flops_axis(ax, which: str = "x") -> None:
    """A log axis in FLOPs (the label says so) with SI-prefixed ticks ('50G', '1T'); finer
    ticks when the range spans under two decades, so there are always a few labels."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    if lo > 0 and hi / lo < 100:
        subs = (1.0, 2.0, 5.0) if hi / lo >= 10 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
        axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: fmt_count(v)))  # '50G' under [FLOPs]
    axis.set_minor_formatter(NullFormatter())


def count_axis(ax, values: Sequence[float], which: str = "x") -> None:
    """A log axis of counts (images) ticked at the values used, labelled 1k, 2.5k, 6k."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    vals = sorted({float(v) for v in values if np.isfinite(v) and v > 0})
    if 0 < len(vals) <= 8:
        axis.set_major_locator(FixedLocator(vals))
        axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: fmt_count(v)))
    axis.set_minor_formatter(NullFormatter())


def flops_note() -> str:
    return FLOPS_NOTE


def chosen_on(d: pd.DataFrame) -> str:
    """Caption words for what a 'best' point was chosen on."""
    val = "selected_on" in d and (d["selected_on"] == "validation").any()
    return " (chosen on validation accuracy)" if val else " (chosen on test accuracy: no validation split)"


def selected_acc(d):
    """The accuracy frontiers select on: validation (`sel`) where the rows carry it, else test."""
    return d["sel"] if "sel" in d else d["acc"]
