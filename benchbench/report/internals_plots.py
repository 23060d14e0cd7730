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

from benchbench import families

FORMATS = ("png", "pdf")
METRIC_LABELS = {
    "attn_dist_first_px": "Mean attention distance, first layer (pixels)",
    "attn_dist_last_px": "Mean attention distance, last layer (pixels)",
    "attn_dist_mean_px": "Mean attention distance, all layers (pixels)",
    "pos_grid_score": "Position-embedding grid score",
}
RF_LABEL = "ResNet receptive field (pixels)"


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


def draw_attention_distance(panels: Sequence[tuple[str, np.ndarray, int]], *,
                            cnn_rf: Sequence[tuple[float, float]] | None = None,
                            cnn_rf_units: str = "fraction") -> Figure:
    """Mean attention distance against depth, one point per head (Figure 7 right).

    panels: (label, distances [layers, heads] in pixels, image size) per model or data size,
    optionally a 4th item: the distance uniform attention would give (a dotted line).
    cnn_rf: (depth, receptive field px) of a ResNet, drawn behind the points; depth is a
    fraction of the network (scaled to each panel's layers) or, with cnn_rf_units="layer",
    the panel's layer index."""
    if cnn_rf_units not in ("fraction", "layer"):
        raise ValueError(f"cnn_rf_units must be 'fraction' or 'layer', got {cnn_rf_units!r}")
    fig, axes = _row_of_axes(len(panels), 3.2, 3.0, sharey=True)
    for ax, (label, dist, image_size, *uniform) in zip(axes, panels):
        dist = np.asarray(dist, dtype=np.float64)
        if uniform and uniform[0] is not None:
            ax.axhline(uniform[0], color="0.3", ls=":", lw=1, zorder=2,
                       label="uniform attention", gid="uniform")
        layers, heads = dist.shape
        x = np.repeat(np.arange(1, layers + 1), heads)  # layer-major, as dist.ravel()
        ax.scatter(x, dist.ravel(), c=np.tile(np.arange(heads), layers), cmap="viridis",
                   s=12, alpha=0.8, zorder=3, label="heads", gid="heads")
        if cnn_rf:
            depth, rf = (np.asarray(v, dtype=np.float64) for v in zip(*cnn_rf))
            xs = depth * layers if cnn_rf_units == "fraction" else depth
            ax.plot(xs, rf, color="0.6", ls="--", marker=".", zorder=1, label=RF_LABEL,
                    gid="cnn_rf")
        ax.set_ylim(0, max(image_size, float(np.nanmax(dist))) * 1.05)
        ax.set_xlim(0.5, layers + 0.5)
        ax.set_title(label)
        ax.set_xlabel("Network depth (layer)")
    axes[0].set_ylabel("Mean attention distance (pixels)")
    if cnn_rf or any(len(p) > 3 and p[3] is not None for p in panels):
        axes[0].legend(loc="lower right", fontsize=7)
    return fig


def attention_distance_plot(panels: Sequence[tuple[str, np.ndarray, int]],
                            out_stem: str | Path, *,
                            cnn_rf: Sequence[tuple[float, float]] | None = None,
                            cnn_rf_units: str = "fraction",
                            formats: Sequence[str] = FORMATS) -> list[Path]:
    return _save(draw_attention_distance(panels, cnn_rf=cnn_rf, cnn_rf_units=cnn_rf_units),
                 out_stem, formats)


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
    fig, axes = _row_of_axes(len(panels), 3.0, 3.0)
    im = None
    for ax, (label, sim) in zip(axes, panels):
        sim = np.asarray(sim)
        gh, gw = sim.shape[:2]
        im = ax.imshow(similarity_mosaic(sim), cmap="viridis", vmin=-1, vmax=1,
                       interpolation="nearest")
        ax.set_xticks(np.arange(gw) * (gw + 1) + (gw - 1) / 2, [str(j + 1) for j in range(gw)])
        ax.set_yticks(np.arange(gh) * (gh + 1) + (gh - 1) / 2, [str(i + 1) for i in range(gh)])
        ax.tick_params(length=0, labelsize=6)
        ax.grid(False)
        ax.set_title(label)
        ax.set_xlabel("Input patch column")
    axes[0].set_ylabel("Input patch row")
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.8, label="Cosine similarity")
    return fig


def pos_similarity_plot(panels: Sequence[tuple[str, np.ndarray]], out_stem: str | Path, *,
                        formats: Sequence[str] = FORMATS) -> list[Path]:
    return _save(draw_pos_similarity(panels), out_stem, formats)


def seed_stats(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, s.d. and count over seeds of `metric` per (family, patch_size, train_size)."""
    d = rows.dropna(subset=[metric])
    keys = ["family", "patch_size", "train_size"]
    g = d.groupby(keys, dropna=False)[metric]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def draw_internals_vs_data(rows: pd.DataFrame,
                           metrics: Sequence[str] = ("attn_dist_first_px", "pos_grid_score")
                           ) -> Figure:
    """Summary numbers against pre-training set size, one line per family and patch size:
    mean over seeds with a +-1 s.d. bar (no bar for one seed)."""
    fig, axes = _row_of_axes(len(metrics), 3.6, 3.0)
    for ax, metric in zip(axes, metrics):
        stats = seed_stats(rows, metric) if metric in rows else None
        if stats is None or stats.empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        for (fam, patch), line in stats.groupby(["family", "patch_size"], dropna=False,
                                                sort=False):
            colour, marker, cmap = families.style(fam)
            patches = sorted(stats.loc[stats["family"] == fam, "patch_size"].dropna().unique())
            if len(patches) > 1 and not pd.isna(patch):  # shades of the family, by patch
                colour = matplotlib.colormaps[cmap](
                    np.linspace(0.5, 0.95, len(patches))[patches.index(patch)])
            line = line.sort_values("train_size")
            name = families.label(fam) + ("" if pd.isna(patch) else f"/{int(patch)}")
            ax.errorbar(line["train_size"].to_numpy(float), line["mean"].to_numpy(float),
                        yerr=line["std"].fillna(0).to_numpy(float), color=colour,
                        marker=marker, ms=4, capsize=2, label=name)
        ax.legend(fontsize=6)
    for ax, metric in zip(axes, metrics):
        ax.set_xscale("log")
        ax.set_xlabel("Pre-training images")
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=8)
    return fig


def internals_vs_data_plot(rows: pd.DataFrame, out_stem: str | Path, *,
                           metrics: Sequence[str] = ("attn_dist_first_px", "pos_grid_score"),
                           formats: Sequence[str] = FORMATS) -> list[Path]:
    return _save(draw_internals_vs_data(rows, metrics), out_stem, formats)
