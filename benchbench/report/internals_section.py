"""The report's "What the models learned" section (paper Figure 7): plots and findings from the
rows' internals columns and their `<results dir>/internals/<run_id>.npz` files.

`build` returns None when no ok row has internals, so older studies' reports are unchanged.
Every sentence is computed from the rows; a change is called a change only when the seed
means differ by more than the seeds' spread (`_differs`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchbench.internals import patch_centre_distances
from benchbench.report import internals_plots as ip
from benchbench.report.load import Study
from benchbench.report.plots.common import Plot

ATTN_FAMILIES = ("vit", "hybrid")
MAX_PANELS = 6  # attention-distance panels in one figure; more are named in the caption
FIELDS = ("attn_dist_first_px", "attn_dist_last_px", "attn_dist_min_first_px",
          "pos_grid_score", "cnn_rf_last_px")


@dataclass
class InternalsSection:
    plots: list[Plot] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> list[str]:
        L = ["## What the models learned (paper Figure 7)", "",
             "Measured after training on the first test images (`eval.internals_images`): the "
             "mean attention distance of every head (pixels between query and key patch "
             "centres, weighted by attention), the cosine similarity of the position "
             "embeddings, and ResNet receptive fields from the architecture. Arrays: "
             "`internals/<run_id>.npz` beside `runs/`.", ""]
        L += [f"- {n}" for n in self.notes] + ([""] if self.notes else [])
        for p in self.plots:
            L += [f"### {p.title}", ""]
            if p.skipped:
                L += [f"*Not drawn: {p.skipped}.*", ""]
                continue
            others = ", ".join(f"[{f.suffix[1:].upper()}]({f.name})" for f in p.files
                               if f.suffix != ".png")
            if p.png is not None:
                L += [f"![{p.title}]({p.png.name})", ""]
            L += [p.caption + (f" ({others})" if others else ""), ""]
        return L


def _rows(study: Study) -> pd.DataFrame:
    """Ok rows with any internals number; train rows only when there are any (a fine-tune's
    internals belong to another question than pre-training data size)."""
    df = study.df[study.df["status"] == "ok"]
    cols = [c for c in FIELDS if c in df]
    if not cols:
        return df.iloc[0:0]
    df = df[df[cols].notna().any(axis=1)].copy()
    if (df["task"] == "train").any():
        df = df[df["task"] == "train"]
    for c in ("train_size", "patch_size", "image_size", "seed", "top1", *cols):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def _load_npz(dirs: Sequence[Path], run_id: str, notes: list[str]) -> dict[str, np.ndarray] | None:
    for d in dirs:
        p = Path(d) / "internals" / f"{run_id}.npz"
        if p.exists():
            try:
                with np.load(p, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            except (OSError, ValueError) as e:
                notes.append(f"`{p}` could not be read ({type(e).__name__}); left out of the plots.")
                return None
    return None


def _size(n: float) -> str:
    n = int(n)
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


def _stats(d: pd.DataFrame, metric: str) -> tuple[float, float, int]:
    v = d[metric].dropna().to_numpy(float)
    return (float(v.mean()) if len(v) else np.nan,
            float(v.std(ddof=1)) if len(v) > 1 else np.nan, len(v))


def _fmt(mean: float, sd: float, n: int, nd: int) -> str:
    if n > 1:
        return f"{mean:.{nd}f} ± {sd:.{nd}f} (s.d., {n} seeds)"
    return f"{mean:.{nd}f} (1 seed)"


def _differs(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool | None:
    """True when the means differ by more than the two s.d. together; None without spread."""
    if a[2] < 2 or b[2] < 2:
        return None
    return abs(a[0] - b[0]) > a[1] + b[1]


def _trend_findings(rows: pd.DataFrame) -> list[str]:
    """One sentence per (model, metric): smallest vs largest training set, seed spread."""
    out = []
    what = {"attn_dist_first_px": ("first-layer mean attention distance", "px", 2),
            "attn_dist_last_px": ("last-layer mean attention distance", "px", 2),
            "pos_grid_score": ("position-embedding grid score", "", 3)}
    seeded = rows.groupby(["model", "train_size"])["seed"].nunique()
    if len(rows) and rows["train_size"].nunique() >= 2 and (seeded < 2).all():
        models = ", ".join(dict.fromkeys(rows["model"].astype(str)))
        return [f"Internals of {models}: one seed per point, so how the attention distance and "
                f"the position-embedding grid score change with the training-set size is not "
                f"judged (the seed spread is unknown); run seed=0,1,2 to see it."]
    for model, d in rows.groupby("model", sort=False):
        sizes = sorted(d["train_size"].dropna().unique())
        if len(sizes) < 2:
            continue
        lo, hi = d[d["train_size"] == sizes[0]], d[d["train_size"] == sizes[-1]]
        for metric, (name, unit, nd) in what.items():
            a, b = _stats(lo, metric), _stats(hi, metric)
            if not (np.isfinite(a[0]) and np.isfinite(b[0])):
                continue
            u = f" {unit}" if unit else ""
            head = (f"{model}: the {name} is {_fmt(*a, nd)}{u} at {_size(sizes[0])} training "
                    f"images and {_fmt(*b, nd)}{u} at {_size(sizes[-1])}")
            diff = _differs(a, b)
            if diff is None:
                tail = "; with a single seed the spread is unknown, so this is no trend."
            elif diff:
                tail = (f": it {'rises' if b[0] > a[0] else 'falls'} by "
                        f"{abs(b[0] - a[0]):.{nd}f}{u}, more than the two seed s.d. together "
                        f"({a[1] + b[1]:.{nd}f}).")
            else:
                tail = ": the change is within the seed spread."
            out.append(head + tail)
    return out


def _uniform_px(arrays: dict[str, np.ndarray]) -> float | None:
    """Mean attention distance of uniform attention over the run's token grid."""
    if "token_grid" not in arrays or "token_px" not in arrays:
        return None
    grid = [int(v) for v in arrays["token_grid"]]
    return float(patch_centre_distances(grid, tuple(arrays["token_px"])).mean())


def _spread_finding(model: str, size: float, dists: list[np.ndarray],
                    uniform: float | None) -> str:
    first = np.concatenate([d[0] for d in dists])
    s = (f"{model} at {_size(size)} images: first-layer heads span {first.min():.2f}-"
         f"{first.max():.2f} px of mean attention distance over {len(dists)} run(s)")
    if uniform is not None:
        s += f" (uniform attention over the grid would give {uniform:.2f} px)"
    return s + "."


def _spread_per_model(spread: list[tuple[str, str, str]], most: int = 4) -> list[str]:
    """One attention-spread sentence per model (its largest training set), ViTs first."""
    last = {model: (fam, line) for fam, model, line in spread}  # sizes ascend: the largest wins
    order = sorted(last.items(), key=lambda kv: (ATTN_FAMILIES.index(kv[1][0])
                                                 if kv[1][0] in ATTN_FAMILIES else 2, kv[0]))
    return [line for _, (_, line) in order[:most]]


def _rf_finding(rows: pd.DataFrame, arrays: dict[str, dict]) -> str | None:
    """The receptive field of a CNN (a plain ResNet before a hybrid's stem)."""
    rows = rows.assign(_hybrid=rows["family"].isin(ATTN_FAMILIES)).sort_values("_hybrid",
                                                                               kind="stable")
    for r in rows.itertuples():
        a = arrays.get(r.run_id)
        if a is None or "cnn_rf_px" not in a:
            continue
        rf, img = a["cnn_rf_px"].astype(float), float(r.image_size)
        covers = np.flatnonzero(rf >= img)
        where = (f"the whole {img:.0f} px image from stage {covers[0] + 1} of {len(rf)} on"
                 if len(covers) else f"at most {rf.max():.0f} px of the {img:.0f} px image")
        return (f"{r.model}'s receptive field is {rf[0]:.0f} px after its first stage and "
                f"covers {where} (computed from the architecture).")
    return None


def build(study: Study, out: Path, formats: Sequence[str]) -> InternalsSection | None:
    rows = _rows(study)
    if rows.empty:
        return None
    sec = InternalsSection()
    arrays = {r: a for r in rows["run_id"]
              if (a := _load_npz(study.dirs, r, sec.notes)) is not None}
    attn = rows[rows["family"].isin(ATTN_FAMILIES) & rows["run_id"].isin(arrays)]
    attn = attn[np.array([("attn_dist_px" in arrays[r]) for r in attn["run_id"]], dtype=bool)]
    rf_line = None
    for r in rows[~rows["family"].isin(ATTN_FAMILIES)].itertuples():
        a = arrays.get(r.run_id, {})
        if "cnn_rf_px" in a:  # the ResNet reference, clipped to what it can see of the image
            rf_line = [(float(f), float(min(v, r.image_size)))
                       for f, v in zip(a["cnn_depth_fraction"], a["cnn_rf_px"])]
            rf_name = r.model
            break

    panels, spread = [], []
    if not attn.empty:
        attn = attn.sort_values(["family", "model", "train_size", "seed"])
        for (model, size), d in attn.groupby(["model", "train_size"], sort=False):
            dists = [arrays[r]["attn_dist_px"] for r in d["run_id"]]
            label = f"{model}, {_size(size)} images" + (f" ({len(dists)} seeds)"
                                                         if len(dists) > 1 else "")
            uniform = _uniform_px(arrays[d["run_id"].iloc[0]])
            panels.append((label, np.concatenate(dists, axis=1), int(d["image_size"].max()),
                           uniform))
            spread.append((d["family"].iloc[0], model, _spread_finding(model, size, dists, uniform)))
    if panels:
        shown = panels[:MAX_PANELS]
        files = ip.attention_distance_plot(shown, out / "internals_attention_distance",
                                           cnn_rf=rf_line, formats=formats)
        cap = ("Mean attention distance of every head (points; colour = head, seeds pooled) "
               "against depth, as the paper's Figure 7 right; dotted: what uniform attention "
               "over the patch grid would give.")
        if rf_line:
            cap += f" Dashed: {rf_name}'s receptive field at the same depth fraction."
        if len(panels) > MAX_PANELS:
            cap += f" {len(panels) - MAX_PANELS} more panel(s) not drawn: " + ", ".join(
                p[0] for p in panels[MAX_PANELS:]) + "."
        sec.plots.append(Plot("internals_attention_distance", "Attention distance by depth",
                              cap, files))
    else:
        sec.plots.append(Plot("internals_attention_distance", "Attention distance by depth",
                              skipped="no ViT or hybrid row with attention arrays"))

    chosen = _chosen_pos(attn, arrays)
    if chosen:
        files = ip.pos_similarity_plot(chosen, out / "internals_pos_similarity", formats=formats)
        sec.plots.append(Plot(
            "internals_pos_similarity", "Position-embedding similarity",
            "Cosine similarity of each patch's position embedding (tile = that patch) with every "
            "other, as the paper's Figure 7 centre; the best run by top-1 at the smallest and "
            "largest training set.", files))

    trend = rows[rows["family"].isin(ATTN_FAMILIES)]
    if trend["train_size"].nunique() >= 2:
        metrics = [m for m in ("attn_dist_first_px", "attn_dist_last_px", "pos_grid_score")
                   if trend[m].notna().any()]
        files = ip.internals_vs_data_plot(trend, out / "internals_vs_data", metrics=metrics,
                                          formats=formats)
        sec.plots.append(Plot(
            "internals_vs_data", "What was learned against training-set size",
            "Seed mean ± 1 s.d. per family and patch size (one line each) against the number "
            "of training images.", files))

    sec.findings = _trend_findings(trend) + _spread_per_model(spread) + [
        f for f in [_rf_finding(rows, arrays)] if f]
    return sec


def _chosen_pos(attn: pd.DataFrame, arrays: dict[str, dict]) -> list[tuple[str, np.ndarray]]:
    """The best run (top-1) of the leading model at the smallest and largest training set."""
    have = attn[np.array([("pos_sim" in arrays[r]) for r in attn["run_id"]], dtype=bool)]
    if have.empty:
        return []
    model = have.groupby("model")["top1"].max().idxmax()
    d = have[have["model"] == model]
    sizes = sorted(d["train_size"].dropna().unique())
    out = []
    for size in dict.fromkeys([sizes[0], sizes[-1]]):
        r = d[d["train_size"] == size].sort_values("top1", ascending=False).iloc[0]
        score = r["pos_grid_score"]
        label = (f"{r['model']}\n{_size(size)}, seed {int(r['seed'])}"
                 + (f", grid {score:.2f}" if pd.notna(score) else ""))
        out.append((label, arrays[r["run_id"]]["pos_sim"]))
    return out
