"""The cost figures: throughput and largest batch (Figure 12), accuracy vs time, speed, memory."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchbench import families
from benchbench.report.load import families_in
from benchbench.report.pareto import pareto_front
from benchbench.report.plots.common import (
    NO_TRAIN,
    Plot,
    figure,
    log2_ticks,
    merged_legend,
    model_colors,
    models_in,
    plain_log,
    save,
    seed_note,
    yerr,
)


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
    fig = figure(4.2 * len(panels) + 1.6, 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (col, lab) in zip(axes, panels):
        for mod in models_in(agg):
            d = agg[(agg["model"] == mod) & agg[col].notna()].sort_values("image_size")
            if d.empty:
                continue
            f = d["family"].iloc[0]
            ax.plot(d["image_size"], d[col], families.style(f)[1] + "-", color=colors[mod], label=mod)
        log2_ticks(ax, agg["image_size"].astype(int))
        ax.set_yscale("log")
        ax.set_xlabel("Input size [px]")
        ax.set_ylabel(lab)
    merged_legend(fig, axes)
    devices = sorted({str(d) for d in m["device"].dropna()}) or ["unknown device"]
    prec = sorted({str(p) for p in m["precision"].dropna()})
    fig.suptitle(f"{plot.title}\n{', '.join(devices)}" + (f", {', '.join(prec)}" if prec else ""))
    plot.files = save(fig, out, plot.name, formats)
    plot.caption = ("Inference throughput (best over batch sizes as measured) and the largest batch "
                    "that fits, against input size, one line per model (median over repeated "
                    f"measure rows); device: {', '.join(devices)}.")
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
    fig = figure()
    ax = fig.add_subplot()
    for f in families_in(pts):
        d = pts[pts["family"] == f]
        color, marker, _ = families.style(f)
        ax.errorbar(d["device_hours"], d["acc"] * 100, yerr=yerr(d["acc_std"]), fmt=marker,
                    color=color, alpha=0.75, label=families.label(f))
        fr = d.iloc[pareto_front(d["device_hours"], d["acc"])]
        ax.plot(fr["device_hours"], fr["acc"] * 100, color=color, lw=1.3)
    ax.set_xscale("log")
    plain_log(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{plot.title}\n{devs}")
    ax.legend(loc="lower right")
    plot.files = save(fig, out, plot.name, formats)
    plot.caption = (f"Accuracy against the run's wall time x number of devices ({devs}); lines: "
                    f"each family's frontier; {seed_note(pts)}.")
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
    fig = figure(4.2 * len(panels) + 1.8, 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (col, lab, mini, scale) in zip(axes, panels):
        for f in families_in(points):
            d = points[(points["family"] == f) & points[col].notna()]
            if d.empty:
                continue
            color, marker, _ = families.style(f)
            ax.errorbar(d[col] * scale, d["acc"] * 100, yerr=yerr(d["acc_std"]), fmt=marker,
                        color=color, alpha=0.75, label=families.label(f))
            fr = d.iloc[pareto_front(d[col], d["acc"], minimize_x=mini)]
            ax.plot(fr[col] * scale, fr["acc"] * 100, color=color, lw=1.3)
        ax.set_xscale("log")
        plain_log(ax)
        ax.set_xlabel(lab + (" (higher is better)" if not mini else " (lower is better)"))
        ax.set_ylabel(ylabel)
    merged_legend(fig, axes)
    fig.suptitle(plot.title)
    plot.files = save(fig, out, plot.name, formats)
    filled = bool(points.get("speed_from_measure", pd.Series(dtype=bool)).any())
    plot.caption = ("Accuracy against inference throughput and peak memory, lines: each "
                    "family's Pareto frontier"
                    + ("; throughput/memory of trained models taken from measure rows of the same "
                       "model and input size where the train row has none" if filled else "")
                    + ".")
    return plot
