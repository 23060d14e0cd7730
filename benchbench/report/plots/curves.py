"""The training-curves figure: loss and evaluated accuracy against images seen, per run."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchbench import families
from benchbench.curves import curve_path
from benchbench.report.load import families_in
from benchbench.report.plots.common import Plot, count_axis, figure, merged_legend, save


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


def training_curves(train: pd.DataFrame, dirs: Sequence[Path], out: Path,
                    formats: Sequence[str]) -> Plot:
    """Left: training loss (mean over each logging interval) against images seen, one thin
    line per run, coloured by family; right: accuracy where the run evaluated (validation
    during training, test with eval.every_steps)."""
    plot = Plot("training_curves", "Training curves")
    curves = read_curves(train, dirs) if "run_id" in train else {}
    if not curves:
        plot.skipped = ("no training curves (`metrics/<run_id>.csv`) for these rows: runs "
                        "made before benchbench wrote curves have none")
        return plot
    rows = train[train["run_id"].astype(str).isin(curves)].drop_duplicates("run_id")
    acc_cols = [c for c in ("val_top1", "test_top1")
                if any(c in k and k[c].notna().any() for k in curves.values())]
    fig = figure(10.0 if acc_cols else 6.4, 4.0)
    axes = fig.subplots(1, 2 if acc_cols else 1, squeeze=False)[0]
    for f in families_in(rows):
        color, marker, _ = families.style(f)
        for i, r in enumerate(rows[rows["family"] == f].itertuples()):
            c = curves[str(r.run_id)]
            axes[0].plot(c["samples_seen"], c["loss"], "-", color=color, lw=0.8, alpha=0.6,
                         label=families.label(f) if i == 0 else None)
            for col, ls in zip(acc_cols, ("-", ":")):
                e = c[c[col].notna()] if col in c else c.iloc[0:0]
                if len(e):
                    axes[1].plot(e["samples_seen"], e[col] * 100, ls, marker=marker, ms=3,
                                 color=color, lw=0.8, alpha=0.7)
    axes[0].set_ylabel("training loss")
    for ax in axes:
        count_axis(ax, [], "x")  # log, labelled 10k, 1M
        ax.set_xlabel("Images seen")
    if acc_cols:
        axes[1].set_ylabel("accuracy [%] (" + ", ".join(
            f"{'solid' if i == 0 else 'dotted'}: {c.replace('_top1', '')}"
            for i, c in enumerate(acc_cols)) + ")")
    merged_legend(fig, axes)
    plot.files = save(fig, out, plot.name, formats)
    plot.caption = (f"Training loss (the mean over each `train.log_every` interval) against "
                    f"images seen, one line per run ({len(curves)} of {len(train)} runs have a "
                    f"curve), coloured by family"
                    + ("; right: accuracy where the run evaluated (validation during training, "
                       "test with eval.every_steps)" if acc_cols else "")
                    + ". From `metrics/<run_id>.csv`.")
    return plot
