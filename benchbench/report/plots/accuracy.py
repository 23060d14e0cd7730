"""The scaling figures: accuracy against compute (Figure 5), data (Figures 3/4), patch size."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from benchbench import families
from benchbench.report.load import families_in, model_base
from benchbench.report.pareto import pareto_front
from benchbench.report.plots.common import (
    DIP_WORDS,
    NO_TRAIN,
    Plot,
    chance_last,
    chance_line,
    chosen_on,
    count_axis,
    draw_fit,
    figure,
    fit_legend,
    flops_axis,
    flops_note,
    frontier_dips,
    legend_entries,
    log2_ticks,
    model_colors,
    model_markers,
    models_in,
    pad,
    save,
    seed_note,
    selected_acc,
    subject,
    yerr,
)
from benchbench.report.scaling import PowerLawFit


def compute_accuracy(
    points: pd.DataFrame, fits: dict[str, PowerLawFit], out: Path, formats: Sequence[str],
    xlabel: str = "Total training compute [FLOPs]", ylabel: str = "top-1 accuracy [%]",
    title: str = "", chance: float | None = None,
) -> Plot:
    """Figure 5: accuracy against training compute, frontier per family and overall."""
    plot = Plot("compute_vs_accuracy", "Accuracy vs training compute")
    if points.empty:
        plot.skipped = NO_TRAIN
        return plot
    pts = points[points["compute"].notna()]
    if pts.empty:
        plot.skipped = "no ok train row has both a compute value and an accuracy"
        return plot
    fig = figure(7.6, 4.2)
    ax = fig.add_subplot()
    fams = families_in(pts)
    markers = model_markers(pts)
    lines = 0  # frontiers drawn as lines (a one-point frontier is only its marker)
    dips = []  # families whose validation-chosen frontier goes down in test accuracy
    for f in fams:
        d = pts[pts["family"] == f]
        color = families.style(f)[0]
        for m in models_in(d):
            dm = d[d["model"] == m]
            ax.errorbar(dm["compute"], dm["acc"] * 100, yerr=yerr(dm["acc_std"]),
                        fmt=markers[m], color=color, alpha=0.75, label=m, zorder=3, gid=m)
        fr = d.iloc[pareto_front(d["compute"], selected_acc(d))]
        ax.plot(fr["compute"], fr["acc"] * 100, color=color, lw=1.3, zorder=2)
        lines += len(fr) > 1
        if frontier_dips(fr):
            dips.append(families.label(f))
    allf = pts.iloc[pareto_front(pts["compute"], selected_acc(pts))]
    overall = len(fams) > 1 and len(allf) > 1
    if overall:
        ax.plot(allf["compute"], allf["acc"] * 100, color="black", lw=0.8, ls="--", zorder=1)
        if frontier_dips(allf) and not dips:
            dips.append("overall")
    chance_words = chance_line(ax, chance)
    pad(ax)
    flops_axis(ax, "x")
    kinds = {draw_fit(ax, fits.get(f), families.style(f)[0]) for f in fams}
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    handles, labels = [], []
    by_label = dict(zip(*reversed(legend_entries(ax))))
    for f in fams:  # the family (its colour), then its models (their markers)
        handles.append(Line2D([], [], color=families.style(f)[0], lw=4, alpha=0.75))
        labels.append(families.label(f))
        for m in models_in(pts[pts["family"] == f]):
            handles.append(by_label.pop(m))
            labels.append(f"  {m}")
    handles += list(by_label.values())  # the chance line
    labels += list(by_label)
    if lines:
        handles.append(Line2D([], [], color="gray", lw=1.3))
        labels.append("frontier (per family)")
    if overall:
        handles.append(Line2D([], [], color="black", lw=0.8, ls="--"))
        labels.append("overall frontier")
    fit_legend(kinds, handles, labels, "power-law fit")
    if dips:
        handles.append(Line2D([], [], ls="none"))
        labels.append("frontiers: picked on validation,\ndrawn at test (may dip)")
    fig.legend(*chance_last(handles, labels), loc="outside right upper")
    plot.files = save(fig, out, plot.name, formats)
    fit_words = {"trusted": "dotted: saturating power-law fit with its 95% band",
                 "untrusted": "faded dotted, no band: a fit that is not trustworthy (see the fits table)"}
    plot.caption = (f"As the paper's Figure 5: {subject(ylabel).lower()} against "
                    f"{xlabel.split(' [')[0].lower()} (log; {flops_note()}), one colour per "
                    f"family and one marker per model"
                    + ("; solid lines: each family's Pareto frontier" if lines else "")
                    + ("; dashed: overall" if overall else "")
                    + (f"; frontier points are {DIP_WORDS} ({', '.join(dips)})" if dips else "")
                    + "".join(f"; {fit_words[k]}" for k in ("trusted", "untrusted") if k in kinds)
                    + (f"; {chance_words}" if chance_words else "")
                    + f"; {seed_note(pts)}.")
    return plot


def dataset_size(
    points: pd.DataFrame, fits: dict[str, PowerLawFit], out: Path, formats: Sequence[str],
    ylabel: str = "top-1 accuracy [%]", title: str = "", note: str = "",
    chance: float | None = None,
) -> Plot:
    """Figures 3/4: accuracy against training-set size, one line per model."""
    plot = Plot("dataset_size_vs_accuracy", "Accuracy vs training-set size")
    if points.empty:
        plot.skipped = NO_TRAIN
        return plot
    pts = points[points["train_size"].notna()]
    sizes = pts["train_size"].unique()
    if len(sizes) < 2:
        plot.skipped = ("every ok train row uses the same training-set size"
                        if len(sizes) else "no ok train row records its training-set size")
        return plot
    idx = pts.assign(_s=selected_acc(pts)).groupby(["model", "train_size"])["_s"].idxmax()
    best = pts.loc[idx.to_numpy()]  # chosen on validation where the rows have it
    colors = model_colors(best)
    fig = figure(7.6, 4.2)
    ax = fig.add_subplot()
    for m in models_in(best):
        d = best[best["model"] == m].sort_values("train_size")
        f = d["family"].iloc[0]
        ax.errorbar(d["train_size"], d["acc"] * 100, yerr=yerr(d["acc_std"]),
                    fmt=families.style(f)[1] + "-", color=colors[m], lw=1.2, label=m)
    chance_words = chance_line(ax, chance)
    pad(ax)
    count_axis(ax, best["train_size"])
    kinds = set()
    handles, labels = legend_entries(ax)
    for f in families_in(best):
        k = draw_fit(ax, fits.get(f), families.style(f)[0])
        kinds.add(k)
        if k:
            handles.append(Line2D([], [], color=families.style(f)[0], ls=":", lw=1.5,
                                  alpha=1.0 if k == "trusted" else 0.45))
            labels.append(f"{families.label(f)} fit (best model)"
                          + ("" if k == "trusted" else ", not trustworthy"))
    ax.set_xlabel("Training-set size [images]")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.legend(*chance_last(handles, labels), loc="outside right upper")
    plot.files = save(fig, out, plot.name, formats)
    fit_words = ("; dotted: power-law fit of each family's best model per size"
                 + (" (faded, no band: not trustworthy)" if "untrusted" in kinds else "")
                 if kinds - {None} else "")
    plot.caption = (f"As the paper's Figures 3/4: {subject(ylabel).lower()} against "
                    f"training-set size (log), one line per model "
                    f"{note + ', ' if note else ''}best over the other settings at each size"
                    f"{chosen_on(best)}"
                    f"{fit_words}" + (f"; {chance_words}" if chance_words else "")
                    + f"; {seed_note(best)}.")
    return plot


def patch_size(points: pd.DataFrame, out: Path, formats: Sequence[str],
               ylabel: str = "top-1 accuracy [%]", chance: float | None = None) -> Plot:
    """ViT patch size against accuracy and forward FLOPs per image."""
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
    best = v.loc[v.assign(_s=selected_acc(v)).groupby(["base", "patch_size"])["_s"].idxmax()
                 .to_numpy()]  # chosen on validation where the rows have it
    colors = model_colors(best.assign(model=best["base"]))
    fig = figure(8.4, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    for base in sorted(best["base"].unique(), key=lambda b: best[best["base"] == b]["params"].median()):
        d = best[best["base"] == base].sort_values("patch_size")
        ax1.errorbar(d["patch_size"], d["acc"] * 100, yerr=yerr(d["acc_std"]), fmt="o-",
                     color=colors[base], label=base)
        ax2.plot(d["patch_size"], d["flops_per_image"], "o-", color=colors[base], label=base)
    chance_words = chance_line(ax1, chance)
    for ax in (ax1, ax2):
        pad(ax)
        log2_ticks(ax, best["patch_size"].astype(int))
        ax.set_xlabel("Patch size [px]")
    ax1.set_ylabel(ylabel)
    flops_axis(ax2, "y")
    ax2.set_ylabel("Forward compute [FLOPs/img]")
    ax1.legend(*legend_entries(ax1), loc="best")
    px = f" at {int(img)} px" if np.isfinite(img) else ""
    plot.title += px
    plot.files = save(fig, out, plot.name, formats)
    plot.caption = (f"ViT patch size against accuracy (left; best over the other settings"
                    f"{chosen_on(best)}) and "
                    f"forward compute per image (right; {flops_note()}){px}, one line per ViT "
                    f"size" + (f"; {chance_words}" if chance_words else "")
                    + f"; {seed_note(best)}.")
    return plot
