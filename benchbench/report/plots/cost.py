"""The cost figures: throughput and largest batch (Figure 12), accuracy vs time, speed, memory."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D

from benchbench import families
from benchbench.report.load import families_in
from benchbench.report.pareto import pareto_front
from benchbench.report.plots.common import (
    NO_TRAIN,
    Plot,
    chance_last,
    chance_line,
    figure,
    legend_entries,
    log2_ticks,
    merged_legend,
    model_colors,
    models_in,
    pad,
    plain_log,
    save,
    seed_note,
    selected_acc,
    yerr,
)


def _frontier(ax, x, y, color) -> bool:
    """A family's frontier: its runs ringed, joined by a line when there are two or more.
    Returns whether a line was drawn."""
    ax.plot(x, y, ls="none", marker="o", ms=11, mfc="none", mec=color, mew=0.9, gid="frontier")
    if len(x) > 1:
        ax.plot(x, y, color=color, lw=1.3)
    return len(x) > 1


def _legend_with_ring(fig, axes) -> None:
    handles, labels = legend_entries(*axes)
    ring = Line2D([], [], ls="none", marker="o", ms=11, mfc="none", mec="0.3", mew=0.9)
    fig.legend(*chance_last(handles + [ring], labels + ["frontier run"]),
               loc="outside right upper")


def _frontier_words(lines: list[str], single: list[str]) -> str:
    """What the caption may promise: lines only where drawn, rings for every frontier run."""
    w = "ringed: each family's Pareto-frontier runs"
    if lines:
        w += f"; lines join them ({', '.join(lines)})"
    if single:
        w += f"; {', '.join(single)}: a frontier of one run, so no line"
    return w


def throughput_batch(measure: pd.DataFrame, out: Path, formats: Sequence[str]) -> Plot:
    """Figure 12: peak inference throughput and largest batch against input size."""
    plot = Plot("throughput_vs_input_size", "Throughput and largest batch vs input size")
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
    fig = figure(4.2 * len(panels) + 1.6, 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (col, lab) in zip(axes, panels):
        for mod in models_in(agg):
            d = agg[(agg["model"] == mod) & agg[col].notna()].sort_values("image_size")
            if d.empty:
                continue
            f = d["family"].iloc[0]
            ax.plot(d["image_size"], d[col], families.style(f)[1] + "-", color=colors[mod], label=mod)
        pad(ax)
        log2_ticks(ax, agg["image_size"].astype(int))
        ax.set_yscale("log")
        ax.set_xlabel("Input size [px]")
        ax.set_ylabel(lab)
    merged_legend(fig, axes)
    devices = sorted({str(d) for d in m["device"].dropna()}) or ["unknown device"]
    prec = sorted({str(p) for p in m["precision"].dropna()})
    plot.files = save(fig, out, plot.name, formats)
    plot.caption = ("As the paper's Figure 12: inference throughput (best over batch sizes as "
                    "measured) and the largest batch that fits, against input size, one line per "
                    f"model (median over repeated measure rows); device: {', '.join(devices)}"
                    + (f", {', '.join(prec)}" if prec else "") + ".")
    return plot




def _hours_label(rows: pd.DataFrame) -> tuple[str, str, float]:
    """(axis label, devices, scale from hours): hours, or minutes/seconds for short runs."""
    devs = sorted({str(d) for d in rows["device"].dropna()})
    gpu = bool(devs) and all(not d.lower().startswith("cpu") for d in devs)
    top = float(rows["device_hours"].max())
    unit, scale = next(((u, k) for u, k in (("hours", 1.0), ("minutes", 60.0))
                        if top * k >= 1.0), ("seconds", 3600.0))
    kind = "GPU" if gpu else "device"
    return (f"Training cost [{kind}-{unit}] (wall time x devices)", ", ".join(devs) or
            "unknown device", scale)


def wall_time(points: pd.DataFrame, out: Path, formats: Sequence[str],
              ylabel: str = "top-1 accuracy [%]", chance: float | None = None) -> Plot:
    """Accuracy against wall time x devices, frontier per family."""
    plot = Plot("time_vs_accuracy", "Accuracy vs training cost in device time")
    if points.empty:
        plot.skipped = NO_TRAIN
        return plot
    pts = points[points["device_hours"].notna() & (points["device_hours"] > 0)]
    if pts.empty:
        plot.skipped = "no ok train row records its wall time"
        return plot
    xlabel, devs, scale = _hours_label(pts)
    pts = pts.assign(device_hours=pts["device_hours"] * scale)
    fig = figure()
    ax = fig.add_subplot()
    lines, single = [], []
    for f in families_in(pts):
        d = pts[pts["family"] == f]
        color, marker, _ = families.style(f)
        ax.errorbar(d["device_hours"], d["acc"] * 100, yerr=yerr(d["acc_std"]), fmt=marker,
                    color=color, alpha=0.75, label=families.label(f))
        fr = d.iloc[pareto_front(d["device_hours"], selected_acc(d))]
        drawn = _frontier(ax, fr["device_hours"], fr["acc"] * 100, color)
        (lines if drawn else single).append(families.label(f))
    chance_words = chance_line(ax, chance)
    pad(ax)
    ax.set_xscale("log")
    plain_log(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _legend_with_ring(fig, [ax])
    plot.files = save(fig, out, plot.name, formats)
    plot.caption = (f"Accuracy against the run's wall time x number of devices ({devs}); "
                    + _frontier_words(lines, single)
                    + (f"; {chance_words}" if chance_words else "")
                    + f"; {seed_note(pts)}.")
    return plot


def speed_memory(points: pd.DataFrame, out: Path, formats: Sequence[str],
                 ylabel: str = "top-1 accuracy [%]", chance: float | None = None) -> Plot:
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
    fig = figure(4.2 * len(panels) + 1.8, 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    lines, single = [], []
    for ax, (col, lab, mini, scale) in zip(axes, panels):
        for f in families_in(points):
            d = points[(points["family"] == f) & points[col].notna()]
            if d.empty:
                continue
            color, marker, _ = families.style(f)
            ax.errorbar(d[col] * scale, d["acc"] * 100, yerr=yerr(d["acc_std"]), fmt=marker,
                        color=color, alpha=0.75, label=families.label(f))
            fr = d.iloc[pareto_front(d[col], selected_acc(d), minimize_x=mini)]
            drawn = _frontier(ax, fr[col] * scale, fr["acc"] * 100, color)
            name = families.label(f) + (f" ({lab.split(' [')[0].lower()})"
                                        if len(panels) > 1 else "")
            (lines if drawn else single).append(name)
        chance_words = chance_line(ax, chance)
        pad(ax)
        ax.set_xscale("log")
        plain_log(ax)
        ax.set_xlabel(lab + (" (higher is better)" if not mini else " (lower is better)"))
        ax.set_ylabel(ylabel)
    _legend_with_ring(fig, axes)
    plot.files = save(fig, out, plot.name, formats)
    filled = bool(points.get("speed_from_measure", pd.Series(dtype=bool)).any())
    drawn = " and ".join(lab.split(" [")[0].lower() for _, lab, _, _ in panels)
    missing = [w for c, w in (("infer_img_per_s", "inference throughput"),
                              ("peak_mem_bytes", "peak memory")) if c not in
               {p[0] for p in panels}]
    plot.caption = (f"Accuracy against {drawn}; " + _frontier_words(lines, single)
                    + (f"; {' and '.join(missing)} not drawn: no row records it" if missing else "")
                    + ("; throughput/memory of trained models taken from measure rows of the same "
                       "model and input size where the train row has none" if filled else "")
                    + (f"; {chance_words}" if chance_words else "") + f"; {seed_note(points)}.")
    return plot
