"""Figures of what the models learned (paper Figure 7): attention distance, position similarity, trends.

Each `draw_*` function returns a matplotlib Figure (object API on the Agg canvas, no pyplot
state) so tests can read the plotted values back; each `*_plot` draws, writes
`<stem>.<fmt>` for each format and returns the files. Inputs are the arrays and row numbers
of `benchbench.internals`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from benchbench import families
from benchbench.report.plots.common import count_axis

FORMATS = ("png", "pdf")
METRIC_LABELS = {
    "attn_dist_first_px": "Mean attention distance, first layer (pixels)",
    "attn_dist_last_px": "Mean attention distance, last layer (pixels)",
    "attn_dist_mean_px": "Mean attention distance, all layers (pixels)",
    "pos_grid_score": "Position-embedding grid score",
    "pos_line_excess": "Position similarity: row/column excess\nover a distance-only fit",
}
MIN_SPAN = {"attn_dist_first_px": 4.0, "attn_dist_last_px": 4.0, "attn_dist_mean_px": 4.0,
            "pos_grid_score": 0.2, "pos_line_excess": 0.2}  # least y range per panel
MAX_COLS = 4  # attention-distance panels per figure row


def _save(fig: Figure, stem: str | Path, formats: Sequence[str]) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = stem.with_name(f"{stem.name}.{fmt}")  # with_suffix would eat a dot in the stem
        meta = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt, {})
        fig.savefig(p, format=fmt, metadata=meta)  # no dates: re-running gives the same file
        paths.append(p)
    return paths


def _row_of_axes(n: int, w: float, h: float, **kw):
    fig = Figure(figsize=(w * n, h), layout="constrained")
    return fig, fig.subplots(1, n, squeeze=False, **kw)[0]


def cnn_rf_line(rfs: Sequence[dict], *, clip: bool = True) -> list[tuple[float, float]]:
    """(depth fraction, receptive field px) of `internals.cnn_receptive_fields` rows, for
    `cnn_rf=`; clipped to the image by default (what the ResNet can see of it)."""
    key = "visible_px" if clip else "receptive_field_px"
    return [(float(r["depth_fraction"]), float(r[key])) for r in rfs]


def head_colors(heads: int) -> list:
    """One colour per head index: tab10's distinct hues up to 10 heads, else viridis."""
    if heads <= 10:
        return [matplotlib.colormaps["tab10"](h) for h in range(heads)]
    return [matplotlib.colormaps["viridis"](v) for v in np.linspace(0, 1, heads)]


def _as_runs(dist) -> np.ndarray:
    """[runs, layers, heads] from one run's [layers, heads] or several runs' stack."""
    d = np.asarray(dist, dtype=np.float64)
    return d[None] if d.ndim == 2 else d


def draw_attention_distance(panels: Sequence[tuple], *,
                            cnn_rf: Sequence[tuple[float, float]] | None = None,
                            cnn_rf_units: str = "fraction", cnn_rf_name: str = "ResNet",
                            ncols: int = MAX_COLS) -> Figure:
    """Mean attention distance against depth, one point per head (Figure 7 right).

    panels: (label, distances in pixels, image size[, uniform[, note]]) per setting, the
    distances [layers, heads] of one run or [runs, layers, heads] of runs pooled; the
    optional uniform is what uniform attention would give (a dotted line), the note a line
    written in the panel (e.g. a grid too coarse to show locality). Points are coloured by
    head index (a key in the figure legend).
    cnn_rf: (depth, receptive field px) of a ResNet, drawn in a panel of its own (a
    receptive field is a diameter, not a mean distance); depth is a fraction of the network,
    or with cnn_rf_units="layer" the layer index."""
    if cnn_rf_units not in ("fraction", "layer"):
        raise ValueError(f"cnn_rf_units must be 'fraction' or 'layer', got {cnn_rf_units!r}")
    n = len(panels) + bool(cnn_rf)
    cols = max(1, min(ncols, n))
    rows = -(-n // cols)
    fig = Figure(figsize=(2.9 * cols + 1.0, 2.7 * rows + 0.3), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    axes = list(grid.ravel())
    top = max((float(np.nanmax(_as_runs(p[1]))) for p in panels), default=1.0)
    most_heads = max((_as_runs(p[1]).shape[2] for p in panels), default=0)
    colors = head_colors(most_heads)
    for ax, (label, dist, image_size, *extra) in zip(axes, panels):
        runs = _as_runs(dist)
        uniform = extra[0] if extra else None
        note = extra[1] if len(extra) > 1 else None
        if uniform is not None:
            ax.axhline(uniform, color="0.3", ls=":", lw=1, zorder=2,
                       label="uniform attention", gid="uniform")
        n_runs, layers, heads = runs.shape
        x = np.repeat(np.arange(1, layers + 1), heads)  # layer-major, as dist[r].ravel()
        offs = np.linspace(-0.12, 0.12, n_runs) if n_runs > 1 else [0.0]  # runs side by side
        pts = np.concatenate([np.c_[x + o, r.ravel()] for o, r in zip(offs, runs)])
        cols_h = np.tile(np.tile(np.arange(heads), layers), n_runs)
        ax.scatter(pts[:, 0], pts[:, 1], c=[colors[h] for h in cols_h], s=12, alpha=0.85,
                   zorder=3, gid="heads")
        ax.set_ylim(0, max(image_size, top) * 1.05)
        ax.set_xlim(0.5, layers + 0.5)
        ax.set_xticks(np.arange(1, layers + 1))
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("Network depth (layer)")
        if axes.index(ax) % cols == 0:
            ax.set_ylabel("Mean attention distance (px)")
        if note:
            ax.text(0.5, 0.06, note, transform=ax.transAxes, ha="center", va="bottom",
                    fontsize=7, color="0.25", gid="note")
    if cnn_rf:
        ax = axes[len(panels)]
        depth, rf = (np.asarray(v, dtype=np.float64) for v in zip(*cnn_rf))
        ax.plot(depth, rf, color="0.4", ls="--", marker="o", ms=4, gid="cnn_rf",
                label=f"{cnn_rf_name} receptive field")
        ax.set_ylim(0, float(np.nanmax(rf)) * 1.08)
        ax.set_title(f"{cnn_rf_name}: receptive field\n(a diameter, not a distance)", fontsize=8)
        ax.set_xlabel("Network depth" + (" (fraction)" if cnn_rf_units == "fraction"
                                         else " (layer)"))
        ax.set_ylabel("Receptive field (px)")
    for ax in axes[n:]:
        ax.set_visible(False)
    handles = [Line2D([], [], ls="", marker="o", ms=5, color=colors[h], label=f"head {h + 1}")
               for h in range(most_heads)]
    if any(len(p) > 3 and p[3] is not None for p in panels):
        handles.append(Line2D([], [], color="0.3", ls=":", lw=1, label="uniform attention"))
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=7, title="key",
                   title_fontsize=7)
    return fig


def attention_distance_plot(panels: Sequence[tuple], out_stem: str | Path, *,
                            cnn_rf: Sequence[tuple[float, float]] | None = None,
                            cnn_rf_units: str = "fraction", cnn_rf_name: str = "ResNet",
                            formats: Sequence[str] = FORMATS) -> list[Path]:
    return _save(draw_attention_distance(panels, cnn_rf=cnn_rf, cnn_rf_units=cnn_rf_units,
                                         cnn_rf_name=cnn_rf_name), out_stem, formats)


def similarity_mosaic(sim: np.ndarray) -> np.ndarray:
    """One image of a [gh, gw, gh, gw] similarity: tile (i, j) is sim[i, j], tiles parted by
    a NaN line (drawn blank)."""
    sim = np.asarray(sim, dtype=np.float64)
    gh, gw = sim.shape[:2]
    out = np.full((gh * (gh + 1) - 1, gw * (gw + 1) - 1), np.nan)
    for i in range(gh):
        for j in range(gw):
            out[i * (gh + 1): i * (gh + 1) + gh, j * (gw + 1): j * (gw + 1) + gw] = sim[i, j]
    return out


def draw_pos_similarity(panels: Sequence[tuple[str, np.ndarray]]) -> Figure:
    """Cosine similarity of position embeddings, one tile per patch (Figure 7 centre)."""
    fig = Figure(figsize=(3.2 * len(panels) + 1.0, 3.4), layout="constrained")  # +1: the bar
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    im = None
    for ax, (label, sim) in zip(axes, panels):
        sim = np.asarray(sim)
        gh, gw = sim.shape[:2]
        im = ax.imshow(similarity_mosaic(sim), cmap="viridis", vmin=-1, vmax=1,
                       interpolation="nearest")
        step = max(1, -(-max(gh, gw) // 8))  # at most ~8 labels a side, so they stay readable
        ax.set_xticks([j * (gw + 1) + (gw - 1) / 2 for j in range(0, gw, step)],
                      [str(j + 1) for j in range(0, gw, step)])
        ax.set_yticks([i * (gh + 1) + (gh - 1) / 2 for i in range(0, gh, step)],
                      [str(i + 1) for i in range(0, gh, step)])
        ax.tick_params(length=0, labelsize=8)
        ax.grid(False)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("Input patch column")
    axes[0].set_ylabel("Input patch row")
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes), shrink=0.8, aspect=25)
        cb.set_label("Cosine similarity", fontsize=9)
        cb.ax.tick_params(labelsize=8)
    return fig


def pos_similarity_plot(panels: Sequence[tuple[str, np.ndarray]], out_stem: str | Path, *,
                        formats: Sequence[str] = FORMATS) -> list[Path]:
    return _save(draw_pos_similarity(panels), out_stem, formats)


def _span_ylim(ax, lo: float, hi: float, span: float) -> None:
    """y limits holding [lo, hi] and at least `span` wide, so seed noise of a tenth of a
    pixel is not stretched over the whole panel."""
    mid, half = (lo + hi) / 2, max(hi - lo, span) / 2 * 1.1
    ax.set_ylim(mid - half, mid + half)


def draw_internals_vs_data(rows: pd.DataFrame,
                           metrics: Sequence[str] = ("attn_dist_first_px", "pos_line_excess"),
                           *, x: str = "train_size", xlabel: str = "Training-set size [images]",
                           line: str = "model", uniform: dict[str, float] | None = None
                           ) -> Figure:
    """Summary numbers against the training-set size, one line per `line` value (a model, or
    a model and its setting): mean over the runs of a point with a +-1 s.d. bar over seeds
    (none for one run). `uniform`: line value -> distance of uniform attention, drawn as a
    dotted reference on the distance panels. Each panel's y range spans at least MIN_SPAN."""
    fig, axes = _row_of_axes(len(metrics), 3.8, 3.2)
    rows = rows.assign(_fam=rows["family"].map(families.sort_key))
    order = list(dict.fromkeys(rows.sort_values(["_fam", "model", line] if line != "model"
                                                else ["_fam", "model"])[line]))
    colors = _line_colors(rows, order, line)
    for ax, metric in zip(axes, metrics):
        d = rows.dropna(subset=[metric, x]) if metric in rows else rows.iloc[0:0]
        if d.empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        lo, hi = np.inf, -np.inf
        for key in order:
            g = d[d[line] == key]
            if g.empty:
                continue
            st = g.groupby(x)[metric].agg(["mean", "std", "count"]).reset_index()
            fam = g["family"].iloc[0]
            ax.errorbar(st[x].to_numpy(float), st["mean"].to_numpy(float),
                        yerr=st["std"].fillna(0).to_numpy(float), color=colors[key],
                        marker=families.style(fam)[1], ms=4, capsize=2, label=str(key))
            lo = min(lo, float((st["mean"] - st["std"].fillna(0)).min()))
            hi = max(hi, float((st["mean"] + st["std"].fillna(0)).max()))
        if metric.endswith("_px") and uniform:
            for v in sorted({uniform[k] for k in order if uniform.get(k) is not None}):
                ax.axhline(v, color="0.35", ls=":", lw=1, zorder=1, gid="uniform",
                           label="uniform attention")
                ax.annotate(f"uniform {v:.1f} px", (1.0, v), xycoords=("axes fraction", "data"),
                            xytext=(-2, 2), textcoords="offset points", ha="right",
                            va="bottom", fontsize=6, color="0.35")
                lo, hi = min(lo, v), max(hi, v)
        _span_ylim(ax, lo, hi, MIN_SPAN.get(metric, 0.0))
        count_axis(ax, d[x], "x")
        ax.set_xlabel(xlabel)
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=8)
    handles: dict = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize=7)
    return fig


def _line_colors(rows: pd.DataFrame, order: list, line: str) -> dict:
    """Shades of each family's colour, one per line, in the order drawn."""
    out = {}
    for fam, g in rows.groupby("family", sort=False):
        keys = [k for k in order if k in set(g[line])]
        shades = np.linspace(0.55, 0.95, len(keys)) if len(keys) > 1 else [0.8]
        cmap = matplotlib.colormaps[families.style(fam)[2]]
        out.update({k: cmap(s) for k, s in zip(keys, shades)})
    return out


def internals_vs_data_plot(rows: pd.DataFrame, out_stem: str | Path, *,
                           metrics: Sequence[str] = ("attn_dist_first_px", "pos_line_excess"),
                           formats: Sequence[str] = FORMATS, **kw) -> list[Path]:
    return _save(draw_internals_vs_data(rows, metrics, **kw), out_stem, formats)
