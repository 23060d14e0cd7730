"""The training-curves figure: loss and evaluated accuracy against images seen, per run."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from benchbench.curves import curve_path
from benchbench.report.plots.common import Plot, figure, model_colors, models_in, save
from benchbench.units import fmt_count


def read_curves(train: pd.DataFrame, dirs: Sequence[Path]) -> dict[str, pd.DataFrame]:
    """run_id -> its `metrics/<run_id>.csv` from the first results dir that has it. An
    unreadable file is left out (the rows, not the curves, are the record)."""
    out: dict[str, pd.DataFrame] = {}
    for run_id in train["run_id"].dropna().unique():
        for d in dirs:
            p = curve_path(Path(d), str(run_id))
            if p.is_file():
                try:
                    c = pd.read_csv(p)
                except (OSError, ValueError, pd.errors.ParserError):
                    break
                if {"samples_seen", "loss"} <= set(c.columns) and len(c):
                    out[str(run_id)] = c
                break
    return out


STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))  # one per learning rate
END_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # one per epochs value


def _epochs(e: float) -> str:
    return f"{float(f'{e:.2g}'):g} epochs"


def images_axis(ax, lo: float, hi: float) -> None:
    """Images seen: linear (labelled 20k, 40k) under two decades, else log with 1-2-5 ticks,
    so the axis always carries several labels."""
    if lo > 0 and hi / lo >= 100:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, min_n_ticks=3))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_count(v) if v else "0"))


def training_curves(train: pd.DataFrame, dirs: Sequence[Path], out: Path,
                    formats: Sequence[str]) -> Plot:
    """Left: training loss (mean over each logging interval) against images seen, one thin
    line per run: colour = model, line style = learning rate, end marker = epochs; right:
    accuracy where the run evaluated (validation during training, test with
    eval.every_steps)."""
    plot = Plot("training_curves", "Training curves")
    curves = read_curves(train, dirs) if "run_id" in train else {}
    if not curves:
        plot.skipped = ("no training curves (`metrics/<run_id>.csv`) for these rows: runs "
                        "made before benchbench wrote curves have none")
        return plot
    rows = train[train["run_id"].astype(str).isin(curves)].drop_duplicates("run_id").copy()
    rows["c_lr"] = pd.to_numeric(rows.get("lr"), errors="coerce")
    rows["c_ep"] = [_epochs(e) if pd.notna(e) else "" for e in
                   pd.to_numeric(rows.get("epochs"), errors="coerce")]
    lrs = sorted(rows["c_lr"].dropna().unique())
    eps = sorted(set(rows["c_ep"]) - {""}, key=lambda t: float(t.split()[0]))
    colors = model_colors(rows)
    acc_cols = [c for c in ("val_top1", "test_top1")
                if any(c in k and k[c].notna().any() for k in curves.values())]
    fig = figure(10.6 if acc_cols else 7.2, 4.0)
    axes = fig.subplots(1, 2 if acc_cols else 1, squeeze=False)[0]
    xs = []
    for m in models_in(rows):
        for r in rows[rows["model"] == m].itertuples():
            c = curves[str(r.run_id)]
            ls = STYLES[lrs.index(r.c_lr) % len(STYLES)] if r.c_lr in lrs else "-"
            end = END_MARKERS[eps.index(r.c_ep) % len(END_MARKERS)] if len(eps) > 1 else None
            axes[0].plot(c["samples_seen"], c["loss"], ls=ls, color=colors[m], lw=0.9,
                         alpha=0.75, gid=str(r.run_id))
            if end:
                axes[0].plot(c["samples_seen"].iloc[-1:], c["loss"].iloc[-1:], end,
                             color=colors[m], ms=4)
            xs += [c["samples_seen"].min(), c["samples_seen"].max()]
            for col, mk in zip(acc_cols, ("o", "x")):
                e = c[c[col].notna()] if col in c else c.iloc[0:0]
                if len(e):
                    axes[1].plot(e["samples_seen"], e[col] * 100, ls=ls, marker=mk, ms=3,
                                 color=colors[m], lw=0.8, alpha=0.75)
    axes[0].set_ylabel("training loss")
    for ax in axes:
        images_axis(ax, float(min(xs)), float(max(xs)))
        ax.set_xlabel("Images seen")
    if acc_cols:
        axes[1].set_ylabel("accuracy [%] (" + ", ".join(
            f"{'circles' if i == 0 else 'crosses'}: {c.replace('_top1', '')}"
            for i, c in enumerate(acc_cols)) + ")")
    handles = [Line2D([], [], color=colors[m], lw=1.5, label=m) for m in models_in(rows)]
    if len(lrs) > 1:
        handles += [Line2D([], [], color="0.3", ls=STYLES[i % len(STYLES)], label=f"lr {v:g}")
                    for i, v in enumerate(lrs)]
    if len(eps) > 1:
        handles += [Line2D([], [], color="0.3", ls="none", marker=END_MARKERS[i % 8], ms=4,
                           label=f"{t} (end)") for i, t in enumerate(eps)]
    fig.legend(handles=handles, loc="outside right upper")
    plot.files = save(fig, out, plot.name, formats)
    one = [f"learning rate {lrs[0]:g}"] if len(lrs) == 1 else []
    one += [eps[0]] if len(eps) == 1 else []
    plot.caption = (f"Training loss (the mean over each `train.log_every` interval) against "
                    f"images seen, one line per run ({len(curves)} of {len(train)} runs have a "
                    f"curve): colour = model"
                    + ("; line style = learning rate" if len(lrs) > 1 else "")
                    + ("; the marker at a line's end = its epochs" if len(eps) > 1 else "")
                    + (f" (every run: {', '.join(one)})" if one else "")
                    + ("; runs of one setting differ only in the seed"
                       if rows.duplicated(["model", "c_lr", "c_ep"]).any() else "")
                    + ("; right: accuracy where the run evaluated (validation during training, "
                       "test with eval.every_steps)" if acc_cols else "")
                    + ". From `metrics/<run_id>.csv`.")
    return plot
