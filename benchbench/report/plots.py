"""The report's figures (matplotlib, object API on the Agg canvas: no pyplot state).

Each function takes seed-aggregated points (or measure rows), writes `<name>.<fmt>` for each
format and returns a `Plot`; with no data it writes nothing and returns the reason instead.
Seeds of one point are drawn as their mean with a +-1 s.d. error bar.
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

from benchbench.report.compare import EqualCompute
from benchbench.report.load import families_in, family_label, family_sort_key, model_base
from benchbench.report.pareto import pareto_front
from benchbench.report.scaling import PowerLawFit

STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7.5,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linewidth": 0.5, "axes.spines.top": False, "axes.spines.right": False,
    "lines.markersize": 5, "errorbar.capsize": 2, "legend.frameon": False,
    "svg.hashsalt": "benchbench", "savefig.dpi": 150,
}
FAMILY_STYLE = {  # colour, marker, colormap for the models of the family
    "vit": ("tab:blue", "o", "Blues"),
    "hybrid": ("tab:green", "^", "Greens"),
    "bit": ("tab:orange", "s", "Oranges"),
    "resnet": ("tab:red", "D", "Reds"),
    "timm": ("tab:purple", "v", "Purples"),
}
PAIR_COLORS = ("tab:purple", "tab:brown", "tab:cyan", "tab:olive", "tab:pink", "tab:gray")
DEFAULT_FORMATS = ("png", "pdf")
NO_TRAIN = "no ok train rows with an accuracy"


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


def fam_style(f: str) -> tuple[str, str, str]:
    return FAMILY_STYLE.get(f, ("tab:gray", "x", "Greys"))


def model_colors(df: pd.DataFrame) -> dict[str, str]:
    """One colour per model, shades of its family's colour (ordered by params)."""
    out = {}
    for f in families_in(df):
        d = df[df["family"] == f]
        order = d.groupby("model")["params"].median().sort_values(na_position="last").index
        cmap = matplotlib.colormaps[fam_style(f)[2]]
        shades = np.linspace(0.5, 0.95, len(order)) if len(order) > 1 else [0.75]
        out.update({m: matplotlib.colors.to_hex(cmap(s)) for m, s in zip(order, shades)})
    return out


def models_in(df: pd.DataFrame) -> list[str]:
    d = df.assign(_f=df["family"].map(family_sort_key))
    d = d.groupby("model").agg(f=("_f", "first"), p=("params", "median")).reset_index()
    return list(d.sort_values(["f", "p", "model"], na_position="last")["model"])


def _figure(w: float = 6.4, h: float = 4.2, **kw) -> Figure:
    return Figure(figsize=(w, h), layout="constrained", **kw)


def _save(fig: Figure, out: Path, name: str, formats: Sequence[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = out / f"{name}.{fmt}"
        meta = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt, {})
        fig.savefig(p, format=fmt, metadata=meta)  # no dates: re-running gives the same file
        paths.append(p)
    return paths


def _merged_legend(fig: Figure, axes) -> None:
    """One legend right of all panels, each label once."""
    handles: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper")


def _yerr(std: pd.Series) -> np.ndarray:
    return np.nan_to_num(std.to_numpy(float) * 100, nan=0.0)


def _log2_ticks(ax, values: Sequence[float], axis: str = "x") -> None:
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=2)
    a.set_major_locator(FixedLocator(sorted(set(values))))
    a.set_minor_locator(NullLocator())
    a.set_major_formatter(ScalarFormatter())


def _plain_log(ax, which: str = "x") -> None:
    """Label a log axis 0.5, 1, 2, 5 instead of 5x10^-1 when it spans under 3 decades of
    human-sized numbers (GiB, hours, multipliers); wider or huge ranges keep 10^k."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    if lo <= 0 or hi / lo > 1e3 or lo < 1e-3 or hi > 1e5:
        return
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _what(label: str) -> str:
    """'top-1 accuracy [%] on x' -> 'Top-1 accuracy' (a caption's subject)."""
    w = label.split(" [")[0]
    return w[:1].upper() + w[1:]


def _seed_note(points: pd.DataFrame) -> str:
    n = points["n_seeds"]
    if len(n) == 0 or n.max() <= 1:
        return "one seed per point, so no error bars"
    lo, hi = int(n.min()), int(n.max())
    seeds = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return f"points are the mean of {seeds} seeds with ±1 standard deviation as error bars"


def _draw_fit(ax, fit: PowerLawFit | None, color: str, to_y=lambda e: 100 * (1 - e)) -> bool:
    if fit is None or not fit.fitted:
        return False
    xs = np.geomspace(fit.x_range[0], fit.x_range[1], 100)
    lo, hi = np.clip(fit.band(xs), 0.0, 1.0)  # an error rate: a band past 0..100% means nothing
    if np.isfinite(lo).all():
        ax.fill_between(xs, to_y(hi), to_y(lo), color=color, alpha=0.12, lw=0)
    ax.plot(xs, to_y(fit.predict(xs)), color=color, ls=":", lw=1.5,
            alpha=1.0 if fit.trustworthy else 0.5)
    return True


def compute_accuracy(
    points: pd.DataFrame, fits: dict[str, PowerLawFit], out: Path, formats: Sequence[str],
    xlabel: str = "Total training compute [FLOPs]", ylabel: str = "top-1 accuracy [%]",
    title: str = "",
) -> Plot:
    """Figure 5: accuracy against training compute, frontier per family and overall."""
    plot = Plot("compute_vs_accuracy", "Accuracy vs training compute (Figure 5)")
    if points.empty:
        plot.skipped = NO_TRAIN
        return plot
    pts = points[points["compute"].notna()]
    if pts.empty:
        plot.skipped = "no ok train row has both a compute value and an accuracy"
        return plot
    fig = _figure(7.6, 4.2)
    ax = fig.add_subplot()
    any_fit = False
    for f in families_in(pts):
        d = pts[pts["family"] == f]
        color, marker, _ = fam_style(f)
        ax.errorbar(d["compute"], d["acc"] * 100, yerr=_yerr(d["acc_std"]), fmt=marker,
                    color=color, alpha=0.75, label=family_label(f), zorder=3)
        fr = d.iloc[pareto_front(d["compute"], d["acc"])]
        ax.plot(fr["compute"], fr["acc"] * 100, color=color, lw=1.3, zorder=2)
        any_fit |= _draw_fit(ax, fits.get(f), color)
    allf = pts.iloc[pareto_front(pts["compute"], pts["acc"])]
    ax.plot(allf["compute"], allf["acc"] * 100, color="black", lw=0.8, ls="--", zorder=1)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or plot.title)
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="gray", lw=1.3), Line2D([], [], color="black", lw=0.8, ls="--")]
    labels += ["frontier (per family)", "overall frontier"]
    if any_fit:
        handles.append(Line2D([], [], color="gray", ls=":", lw=1.5))
        labels.append("fit E = a(C+d)^-b + c\nwith 95% band")
    fig.legend(handles, labels, loc="outside right upper")
    plot.files = _save(fig, out, plot.name, formats)
    plot.caption = (f"{_what(ylabel)} against total training compute (log), one colour "
                    f"and marker per family; solid lines: each family's Pareto frontier, dashed: "
                    f"overall; dotted: saturating power-law fit (faded: not trustworthy); "
                    f"{_seed_note(pts)}.")
    return plot


def dataset_size(
    points: pd.DataFrame, fits: dict[str, PowerLawFit], out: Path, formats: Sequence[str],
    ylabel: str = "top-1 accuracy [%]", title: str = "", note: str = "",
) -> Plot:
    """Figures 3/4: accuracy against training-set size, one line per model."""
    plot = Plot("dataset_size_vs_accuracy", "Accuracy vs training-set size (Figures 3/4)")
    if points.empty:
        plot.skipped = NO_TRAIN
        return plot
    pts = points[points["train_size"].notna()]
    sizes = pts["train_size"].unique()
    if len(sizes) < 2:
        plot.skipped = ("every ok train row uses the same training-set size"
                        if len(sizes) else "no ok train row records its training-set size")
        return plot
    idx = pts.groupby(["model", "train_size"])["acc"].idxmax()
    best = pts.loc[idx.to_numpy()]
    colors = model_colors(best)
    fig = _figure(7.6, 4.2)
    ax = fig.add_subplot()
    for m in models_in(best):
        d = best[best["model"] == m].sort_values("train_size")
        f = d["family"].iloc[0]
        ax.errorbar(d["train_size"], d["acc"] * 100, yerr=_yerr(d["acc_std"]),
                    fmt=fam_style(f)[1] + "-", color=colors[m], lw=1.2, label=m)
    handles, labels = ax.get_legend_handles_labels()
    for f in families_in(best):
        if _draw_fit(ax, fits.get(f), fam_style(f)[0]):
            handles.append(Line2D([], [], color=fam_style(f)[0], ls=":", lw=1.5))
            labels.append(f"{family_label(f)} fit (best model)")
    ax.set_xscale("log")
    ax.set_xlabel("Training-set size [images]")
    ax.set_ylabel(ylabel)
    ax.set_title(title or plot.title)
    fig.legend(handles, labels, loc="outside right upper")
    plot.files = _save(fig, out, plot.name, formats)
    plot.caption = (f"{_what(ylabel)} against training-set size, one line per model "
                    f"{note + ', ' if note else ''}best over the other settings at each size; dotted: power-law "
                    f"fit of each family's best model per size; {_seed_note(best)}.")
    return plot


def throughput_batch(measure: pd.DataFrame, out: Path, formats: Sequence[str]) -> Plot:
    """Figure 12: peak inference throughput and largest batch against input size."""
    plot = Plot("throughput_vs_input_size", "Throughput and largest batch vs input size (Figure 12)")
    m = measure[measure["image_size"].notna()]
    panels = [(c, lab) for c, lab in (("infer_img_per_s", "Peak inference throughput [img/s]"),
                                      ("max_batch_size", "Largest batch that fits [images]"))
              if m[c].notna().any()]
    if m.empty or not panels:
        plot.skipped = ("no measure rows (task=measure) in these results" if measure.empty else
                        "the measure rows have no throughput or max-batch values "
                        "(throughput is timed on a GPU, or with measure.throughput=true)")
        return plot
    agg = m.groupby(["family", "model", "image_size"], as_index=False).agg(
        infer_img_per_s=("infer_img_per_s", "median"), max_batch_size=("max_batch_size", "median"),
        params=("params", "median"))
    colors = model_colors(agg)
    fig = _figure(4.2 * len(panels) + 1.6, 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (col, lab) in zip(axes, panels):
        for mod in models_in(agg):
            d = agg[(agg["model"] == mod) & agg[col].notna()].sort_values("image_size")
            if d.empty:
                continue
            f = d["family"].iloc[0]
            ax.plot(d["image_size"], d[col], fam_style(f)[1] + "-", color=colors[mod], label=mod)
        _log2_ticks(ax, agg["image_size"].astype(int))
        ax.set_yscale("log")
        ax.set_xlabel("Input size [px]")
        ax.set_ylabel(lab)
    _merged_legend(fig, axes)
    devices = sorted({str(d) for d in m["device"].dropna()}) or ["unknown device"]
    prec = sorted({str(p) for p in m["precision"].dropna()})
    fig.suptitle(f"{plot.title}\n{', '.join(devices)}" + (f", {', '.join(prec)}" if prec else ""))
    plot.files = _save(fig, out, plot.name, formats)
    plot.caption = ("Inference throughput (best over batch sizes as measured) and the largest batch "
                    "that fits, against input size, one line per model (median over repeated "
                    f"measure rows); device: {', '.join(devices)}.")
    return plot


def patch_size(points: pd.DataFrame, out: Path, formats: Sequence[str],
               ylabel: str = "top-1 accuracy [%]") -> Plot:
    """ViT patch size against accuracy and forward GFLOPs per image."""
    plot = Plot("patch_size", "ViT patch size vs accuracy and compute")
    if points.empty:
        plot.skipped = NO_TRAIN
        return plot
    v = points[(points["family"] == "vit") & points["patch_size"].notna()].copy()
    if v.empty:
        plot.skipped = "no ok ViT train rows"
        return plot
    v["base"] = v["model"].map(model_base)
    if v.groupby("base")["patch_size"].nunique().max() < 2:
        plot.skipped = "no ViT size was trained with two or more patch sizes"
        return plot
    img = v["image_size"].mode().iloc[0] if v["image_size"].notna().any() else np.nan
    if np.isfinite(img):
        v = v[v["image_size"] == img]
    best = v.loc[v.groupby(["base", "patch_size"])["acc"].idxmax().to_numpy()]
    colors = model_colors(best.assign(model=best["base"]))
    fig = _figure(8.4, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    for base in sorted(best["base"].unique(), key=lambda b: best[best["base"] == b]["params"].median()):
        d = best[best["base"] == base].sort_values("patch_size")
        ax1.errorbar(d["patch_size"], d["acc"] * 100, yerr=_yerr(d["acc_std"]), fmt="o-",
                     color=colors[base], label=base)
        ax2.plot(d["patch_size"], d["flops_per_image"] / 1e9, "o-", color=colors[base], label=base)
    for ax in (ax1, ax2):
        _log2_ticks(ax, best["patch_size"].astype(int))
        ax.set_xlabel("Patch size [px]")
    ax1.set_ylabel(ylabel)
    ax2.set_yscale("log")
    ax2.set_ylabel("Forward GFLOPs/img (2xMAC, incl. attn)")
    ax1.legend(loc="best")
    px = f" at {int(img)} px" if np.isfinite(img) else ""
    fig.suptitle(plot.title + px)
    plot.files = _save(fig, out, plot.name, formats)
    plot.caption = (f"ViT patch size against accuracy (left; best over the other settings) and "
                    f"forward GFLOPs per image (right){px}, one line per ViT size; "
                    f"{_seed_note(best)}.")
    return plot


def _hours_label(rows: pd.DataFrame) -> tuple[str, str]:
    devs = sorted({str(d) for d in rows["device"].dropna()})
    gpu = bool(devs) and all(not d.lower().startswith("cpu") for d in devs)
    unit = "GPU-hours" if gpu else "device-hours"
    return f"Training cost [{unit}] (wall time x devices)", ", ".join(devs) or "unknown device"


def wall_time(points: pd.DataFrame, out: Path, formats: Sequence[str],
              ylabel: str = "top-1 accuracy [%]") -> Plot:
    """Accuracy against wall time x devices, frontier per family."""
    plot = Plot("time_vs_accuracy", "Accuracy vs training cost in device-hours")
    if points.empty:
        plot.skipped = NO_TRAIN
        return plot
    pts = points[points["device_hours"].notna() & (points["device_hours"] > 0)]
    if pts.empty:
        plot.skipped = "no ok train row records its wall time"
        return plot
    xlabel, devs = _hours_label(pts)
    fig = _figure()
    ax = fig.add_subplot()
    for f in families_in(pts):
        d = pts[pts["family"] == f]
        color, marker, _ = fam_style(f)
        ax.errorbar(d["device_hours"], d["acc"] * 100, yerr=_yerr(d["acc_std"]), fmt=marker,
                    color=color, alpha=0.75, label=family_label(f))
        fr = d.iloc[pareto_front(d["device_hours"], d["acc"])]
        ax.plot(fr["device_hours"], fr["acc"] * 100, color=color, lw=1.3)
    ax.set_xscale("log")
    _plain_log(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{plot.title}\n{devs}")
    ax.legend(loc="lower right")
    plot.files = _save(fig, out, plot.name, formats)
    plot.caption = (f"Accuracy against the run's wall time x number of devices ({devs}); lines: "
                    f"each family's frontier; {_seed_note(pts)}.")
    return plot


def speed_memory(points: pd.DataFrame, out: Path, formats: Sequence[str],
                 ylabel: str = "top-1 accuracy [%]") -> Plot:
    """Pareto fronts of accuracy against inference throughput and peak memory."""
    plot = Plot("speed_memory_vs_accuracy", "Accuracy vs inference throughput and peak memory")
    if points.empty:
        plot.skipped = NO_TRAIN
        return plot
    panels = [(c, lab, mini, scale) for c, lab, mini, scale in (
        ("infer_img_per_s", "Inference throughput [img/s]", False, 1.0),
        ("peak_mem_bytes", "Peak memory [GiB]", True, 2.0**-30)) if points[c].notna().any()]
    if not panels:
        plot.skipped = ("no ok train row has a throughput or peak-memory value, and no measure "
                        "row matches a trained model and input size")
        return plot
    if len(panels) == 1:  # e.g. CPU rows: throughput measured, memory not
        plot.title = ("Accuracy vs inference throughput" if panels[0][0] == "infer_img_per_s"
                      else "Accuracy vs peak memory")
    fig = _figure(4.2 * len(panels) + 1.8, 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (col, lab, mini, scale) in zip(axes, panels):
        for f in families_in(points):
            d = points[(points["family"] == f) & points[col].notna()]
            if d.empty:
                continue
            color, marker, _ = fam_style(f)
            ax.errorbar(d[col] * scale, d["acc"] * 100, yerr=_yerr(d["acc_std"]), fmt=marker,
                        color=color, alpha=0.75, label=family_label(f))
            fr = d.iloc[pareto_front(d[col], d["acc"], minimize_x=mini)]
            ax.plot(fr[col] * scale, fr["acc"] * 100, color=color, lw=1.3)
        ax.set_xscale("log")
        _plain_log(ax)
        ax.set_xlabel(lab + (" (higher is better)" if not mini else " (lower is better)"))
        ax.set_ylabel(ylabel)
    _merged_legend(fig, axes)
    fig.suptitle(plot.title)
    plot.files = _save(fig, out, plot.name, formats)
    filled = bool(points.get("speed_from_measure", pd.Series(dtype=bool)).any())
    plot.caption = ("Accuracy against inference throughput and peak memory, lines: each "
                    "family's Pareto frontier"
                    + ("; throughput/memory of trained models taken from measure rows of the same "
                       "model and input size where the train row has none" if filled else "")
                    + ".")
    return plot


def equal_compute_plot(ec: EqualCompute, out: Path, formats: Sequence[str],
                       metric_label: str = "top-1") -> Plot:
    """Best accuracy per family at each budget, pairwise differences and compute multipliers."""
    plot = Plot("equal_compute", "Equal-compute comparison")
    p = ec.pairs[np.isfinite(ec.pairs["diff"].to_numpy(float))]
    if p.empty:
        plot.skipped = ("fewer than two families" if ec.pairs.empty else
                        "no budget lies inside the compute range of two families")
        return plot
    fig = _figure(6.4, 8.0)
    ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True)
    b = ec.best[np.isfinite(ec.best["acc"].to_numpy(float))]
    for f in families_in(b):
        d = b[b["family"] == f]
        color, marker, _ = fam_style(f)
        err = None
        if ec.bootstrapped:
            err = np.vstack([(d["acc"] - d["acc_lo"]) * 100, (d["acc_hi"] - d["acc"]) * 100])
            err = np.nan_to_num(np.clip(err, 0, None))
        ax1.errorbar(d["budget"], d["acc"] * 100, yerr=err, fmt=marker + "-", color=color,
                     label=family_label(f))
    ax1.set_ylabel(f"best {metric_label} at budget [%]")
    ax1.legend(loc="lower right")
    pairs = list(dict.fromkeys(zip(p["family_a"], p["family_b"])))
    for k, (fa, fb) in enumerate(pairs):
        d = p[(p["family_a"] == fa) & (p["family_b"] == fb)]
        color = PAIR_COLORS[k % len(PAIR_COLORS)]
        shift = 10 ** (0.015 * (k - (len(pairs) - 1) / 2))  # side by side, not on top
        lab = f"{family_label(fa)} - {family_label(fb)}"
        err = _err(d["diff"], d["diff_lo"], d["diff_hi"], 100)
        ax2.errorbar(d["budget"] * shift, d["diff"] * 100, yerr=err, fmt="o-", color=color, label=lab)
        dm = d[np.isfinite(d["multiplier"].to_numpy(float))]
        if not dm.empty:
            ax3.errorbar(dm["budget"] * shift, dm["multiplier"],
                         yerr=_err(dm["multiplier"], dm["mult_lo"], dm["mult_hi"], 1), fmt="o-",
                         color=color, label=f"{family_label(fb)} to match {family_label(fa)}")
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_ylabel("difference [points]")
    ax2.legend(loc="best")
    ax3.axhline(1, color="black", lw=0.8)
    ax3.set_yscale("log")
    _plain_log(ax3, "y")
    ax3.set_ylabel("compute multiplier [x]")
    if ax3.get_legend_handles_labels()[0]:  # the 1x line alone carries no label
        ax3.legend(loc="best")
    else:
        ax3.text(0.5, 0.5, "no budget where one family reaches another's accuracy",
                 transform=ax3.transAxes, ha="center", va="center", fontsize=9, color="0.4")
    ax3.set_xscale("log")
    ax3.set_xlabel("Training compute budget [FLOPs]")
    ci = "95% bootstrap CI over seeds" if ec.bootstrapped else "one seed per point: no CI"
    fig.suptitle(f"{plot.title} ({ci})")
    plot.files = _save(fig, out, plot.name, formats)
    plot.caption = (f"Top: each family's best {metric_label} at each budget (interpolated on its "
                    f"frontier in log-compute, not extrapolated); middle: pairwise difference; "
                    f"bottom: how many times the budget family B needs to match family A; {ci}.")
    return plot


def _err(v: pd.Series, lo: pd.Series, hi: pd.Series, scale: float):
    e = np.vstack([(v - lo).to_numpy(float), (hi - v).to_numpy(float)]) * scale
    if not np.isfinite(e).any():
        return None
    return np.nan_to_num(np.clip(e, 0, None))
