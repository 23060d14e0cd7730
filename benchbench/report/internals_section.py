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

from benchbench import families
from benchbench.internals import patch_centre_distances
from benchbench.report import internals_plots as ip
from benchbench.report.internals_rows import (
    MIN_GRID,
    internals_rows,
    line_excess,
    load_npz,
    name_settings,
    runs_words,
    sel_column,
    size_words,
    token_grid,
)
from benchbench.report.load import Study
from benchbench.report.plots.common import Plot

ATTN_FAMILIES = ("vit", "hybrid")
MAX_PANELS = 12  # attention-distance panels in one figure; more are named in the caption


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
            shown = p.png or next((f for f in p.files if f.suffix == ".svg"), None)  # --formats svg
            others = ", ".join(f"[{f.suffix[1:].upper()}]({f.name})" for f in p.files
                               if f != shown)
            if shown is not None:
                L += [f"![{p.title}]({shown.name})", ""]
            L += [p.caption + (f" ({others})" if others else ""), ""]
        return L


def _stats(d: pd.DataFrame, metric: str) -> tuple[float, float, int]:
    v = d[metric].dropna().to_numpy(float)
    return (float(v.mean()) if len(v) else np.nan,
            float(v.std(ddof=1)) if len(v) > 1 else np.nan, len(v))


def _fmt(mean: float, sd: float, n: int, nd: int) -> str:
    if n > 1:
        return f"{mean:.{nd}f} ± {sd:.{nd}f} (s.d., {n} runs)"
    return f"{mean:.{nd}f} (1 run)"


def _differs(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool | None:
    """True when the means differ by more than the two s.d. together; None without spread."""
    if a[2] < 2 or b[2] < 2:
        return None
    return abs(a[0] - b[0]) > a[1] + b[1]


TREND_WHAT = {"attn_dist_first_px": ("first-layer mean attention distance", "px", 2),
              "attn_dist_last_px": ("last-layer mean attention distance", "px", 2),
              "pos_line_excess": ("row/column excess of the position similarity", "", 3)}


def _trend_findings(rows: pd.DataFrame, x: str = "train_size",
                    noun: str = "training images") -> list[str]:
    """One sentence per (line, metric): smallest vs largest `x`, judged against the spread
    of the runs of each setting (runs that differ only in the seed)."""
    out = []
    if "line" not in rows:
        rows = rows.assign(line=rows["model"])
    seeded = rows.groupby(["line", x])["seed"].nunique()
    if len(rows) and rows[x].nunique() >= 2 and (seeded < 2).all():
        lines = ", ".join(dict.fromkeys(rows["line"].astype(str)))
        return [f"Internals of {lines}: one run per setting, so how the attention distance and "
                f"the position embeddings change with the number of {noun} is not judged (the "
                f"seed spread is unknown); run seed=0,1,2 to see it."]
    for line, d in rows.groupby("line", sort=False):
        sizes = sorted(d[x].dropna().unique())
        if len(sizes) < 2:
            continue
        lo, hi = d[d[x] == sizes[0]], d[d[x] == sizes[-1]]
        for metric, (name, unit, nd) in TREND_WHAT.items():
            if metric not in d:
                continue
            a, b = _stats(lo, metric), _stats(hi, metric)
            if not (np.isfinite(a[0]) and np.isfinite(b[0])):
                continue
            u = f" {unit}" if unit else ""
            head = (f"{line}: the {name} is {_fmt(*a, nd)}{u} at {size_words(sizes[0])} {noun} "
                    f"and {_fmt(*b, nd)}{u} at {size_words(sizes[-1])}")
            diff = _differs(a, b)
            if diff is None:
                tail = "; with a single run the seed spread is unknown, so this is no trend."
            elif diff:
                tail = (f": it {'rises' if b[0] > a[0] else 'falls'} by "
                        f"{abs(b[0] - a[0]):.{nd}f}{u}, more than the two seed s.d. together "
                        f"({a[1] + b[1]:.{nd}f}).")
            else:
                tail = ": the change is within the seed spread."
            out.append(head + tail)
    return out


def _uniform_px(arrays: dict[str, np.ndarray]) -> float | None:
    """Mean attention distance of uniform attention over all the run's tokens, in the reference
    convention the rows use (attention to a class token counts 0 px): the patch grid's mean
    distance x patches / (patches + prefix tokens). Arrays written before the prefix count was
    stored come from timm ViTs and hybrids with one class token."""
    if "token_grid" not in arrays or "token_px" not in arrays:
        return None
    grid = [int(v) for v in arrays["token_grid"]]
    n = int(np.prod(grid))
    prefix = int(arrays["num_prefix_tokens"]) if "num_prefix_tokens" in arrays else 1
    return float(patch_centre_distances(grid, tuple(arrays["token_px"])).mean()) * n / (n + prefix)


def _spread_finding(model: str, setting: str, runs: str, dists: list[np.ndarray],
                    uniform: float | None) -> str:
    first = np.concatenate([d[0] for d in dists])
    s = (f"{model} ({setting}; {runs}): first-layer heads span {first.min():.2f}-"
         f"{first.max():.2f} px of mean attention distance")
    if uniform is not None:
        s += (f" (uniform attention over every token would give {uniform:.2f} px; attention to the"
              " class token counts 0 px, as in the paper's convention)")
    return s + "."


def _spread_per_model(spread: list[tuple[str, str, str]], most: int = 4) -> list[str]:
    """One attention-spread sentence per model (its last setting: the largest training set),
    ViTs first."""
    last = {model: (fam, line) for fam, model, line in spread}  # sizes ascend: the largest wins
    order = sorted(last.items(), key=lambda kv: (families.sort_key(kv[1][0]), kv[0]))
    return [line for _, (_, line) in order[:most]]


def _coarse_finding(coarse: dict[str, tuple[int, int]]) -> str | None:
    if not coarse:
        return None
    names = ", ".join(f"{m} ({g[0]}×{g[1]})" for m, g in coarse.items())
    return (f"No locality is read from {names}: a patch grid under {MIN_GRID}×{MIN_GRID} "
            f"puts every patch next to most others, so attention distance and position "
            f"similarity cannot show it.")


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


def _cnn_rf(rows: pd.DataFrame, arrays: dict[str, dict]):
    """(depth fraction, receptive field px clipped to the image) of the first plain CNN."""
    for r in rows[~rows["family"].isin(ATTN_FAMILIES)].itertuples():
        a = arrays.get(r.run_id, {})
        if "cnn_rf_px" in a:  # what the ResNet can see of the image
            return [(float(f), float(min(v, r.image_size)))
                    for f, v in zip(a["cnn_depth_fraction"], a["cnn_rf_px"])], r.model
    return None, None


def _attention_panels(attn: pd.DataFrame, arrays: dict[str, dict]):
    """Panels (one per setting, runs pooled), spread sentences and too-coarse grids."""
    panels, spread, coarse = [], [], {}
    for _, d in attn.groupby("point", sort=False):
        r0 = d.iloc[0]
        dists = [arrays[r]["attn_dist_px"] for r in d["run_id"]]
        grid = token_grid(arrays[r0["run_id"]])
        runs = runs_words(d)
        label = f"{r0['model']}\n{r0['setting']}\n{runs}"
        uniform = _uniform_px(arrays[r0["run_id"]])
        small = grid is not None and min(grid) < MIN_GRID
        note = f"{grid[0]}×{grid[1]} grid: too coarse for locality" if small else None
        shapes = {np.shape(x) for x in dists}
        stack = np.stack(dists) if len(shapes) == 1 else dists[0]
        panels.append((label, stack, int(d["image_size"].max()), uniform, note))
        if small:
            coarse[str(r0["model"])] = grid
        else:
            best = d[sel_column(attn)].mean()  # per model the largest set, then the best setting
            spread.append(((r0["train_size"], best), (r0["family"], r0["model"], _spread_finding(
                r0["model"], r0["setting"], runs, dists, uniform))))
    spread = [s for _, s in sorted(spread, key=lambda kv: kv[0])]
    return panels, spread, coarse


def build(study: Study, out: Path, formats: Sequence[str]) -> InternalsSection | None:
    rows = internals_rows(study)
    if rows.empty:
        return None
    sec = InternalsSection()
    arrays = {r: a for r in rows["run_id"]
              if (a := load_npz(study.dirs, r, sec.notes)) is not None}
    excess = [line_excess(arrays[r]["pos_sim"]) if "pos_sim" in arrays.get(r, {}) else None
              for r in rows["run_id"]]
    rows = name_settings(rows.assign(pos_line_excess=pd.to_numeric(pd.Series(
        excess, index=rows.index, dtype=object), errors="coerce")))
    attn = rows[rows["family"].isin(ATTN_FAMILIES) & rows["run_id"].isin(arrays)]
    attn = attn[np.array([("attn_dist_px" in arrays[r]) for r in attn["run_id"]], dtype=bool)]
    rf_line, rf_name = _cnn_rf(rows, arrays)
    panels, spread, coarse = _attention_panels(attn, arrays) if len(attn) else ([], [], {})
    if panels:
        shown = panels[:MAX_PANELS]
        files = ip.attention_distance_plot(shown, out / "internals_attention_distance",
                                           cnn_rf=rf_line, cnn_rf_name=rf_name or "ResNet",
                                           formats=formats)
        cap = ("Mean attention distance of every head against depth, one panel per setting "
               "(the runs of a setting differ only in the seed and are drawn side by side; "
               "colour = head index, see the key), as the paper's Figure 7 right; dotted: what "
               "uniform attention over the patch grid would give.")
        if rf_line:
            cap += (f" Last panel: {rf_name}'s receptive field against depth, a diameter in "
                    f"pixels (clipped to the image), so compare its shape, not its values.")
        if coarse:
            cap += (f" Grids under {MIN_GRID}×{MIN_GRID} patches are marked: they cannot show "
                    f"locality.")
        if len(panels) > MAX_PANELS:
            cap += f" {len(panels) - MAX_PANELS} more panel(s) not drawn: " + "; ".join(
                p[0].replace("\n", ", ") for p in panels[MAX_PANELS:]) + "."
        sec.plots.append(Plot("internals_attention_distance", "Attention distance by depth",
                              cap, files))
    else:
        sec.plots.append(Plot("internals_attention_distance", "Attention distance by depth",
                              skipped="no ViT or hybrid row with attention arrays"))

    chosen, on = _chosen_pos(attn, arrays)
    if chosen:
        files = ip.pos_similarity_plot(chosen, out / "internals_pos_similarity", formats=formats)
        sec.plots.append(Plot(
            "internals_pos_similarity", "Position-embedding similarity",
            "Cosine similarity of each patch's position embedding (tile = that patch) with every "
            f"other, as the paper's Figure 7 centre; the run with the best {on} top-1 of the "
            f"leading model whose grid is at least {MIN_GRID}×{MIN_GRID}, at the smallest and "
            "largest training set; 'excess': how much more similar patches of one row or column "
            "are than a fit on distance alone gives.", files))

    trend = rows[rows["family"].isin(ATTN_FAMILIES)]
    x, noun, xlabel = _trend_axis(trend)
    if trend[x].nunique() >= 2:
        metrics = [m for m in ("attn_dist_first_px", "attn_dist_last_px", "pos_line_excess")
                   if trend[m].notna().any()]
        uniform = {r["line"]: _uniform_px(arrays[r["run_id"]]) for _, r in trend.iterrows()
                   if r["run_id"] in arrays}
        files = ip.internals_vs_data_plot(trend, out / "internals_vs_data", metrics=metrics,
                                          x=x, xlabel=xlabel, line="line", uniform=uniform,
                                          formats=formats)
        sec.plots.append(Plot(
            "internals_vs_data", f"What was learned against the number of {noun}",
            f"Mean ± 1 s.d. over the runs of each setting (they differ only in the seed), one "
            f"line per model against the number of {noun}; dotted: uniform attention. Each "
            f"panel spans at least {ip.MIN_SPAN['attn_dist_first_px']:g} px or "
            f"{ip.MIN_SPAN['pos_line_excess']:g}, so seed noise does not fill it.", files))

    fine = trend[~trend["model"].isin(coarse)]
    sec.findings = _trend_findings(fine, x, noun) + _spread_per_model(spread) + [
        f for f in [_coarse_finding(coarse), _rf_finding(rows, arrays)] if f]
    return sec


def _trend_axis(rows: pd.DataFrame) -> tuple[str, str, str]:
    """(column, noun, axis label): training-set size, or for fine-tunes alone the
    pre-training set size."""
    if len(rows) and (rows["task"] == "transfer").all() and "pretrain_train_size" in rows:
        ds = ", ".join(sorted({str(v) for v in rows["pretrain_dataset"].dropna()}))
        return ("pretrain_train_size", "pre-training images",
                f"Pre-training images{f' ({ds})' if ds else ''}")
    return "train_size", "training images", "Training-set size [images]"


def _chosen_pos(attn: pd.DataFrame, arrays: dict[str, dict]
                ) -> tuple[list[tuple[str, np.ndarray]], str]:
    """The best run (validation top-1 where every row has it, else test) of the leading
    model whose grid can show locality, ViTs first, at the smallest and largest training set."""
    ok = [("pos_sim" in arrays[r]) and min(arrays[r]["pos_sim"].shape[:2]) >= MIN_GRID
          for r in attn["run_id"]]
    have = attn[np.array(ok, dtype=bool)]
    if have.empty:
        return [], ""
    sel = sel_column(have)
    on = "validation" if sel == "val_top1" else "test"
    lead = have.groupby("model").agg(f=("_fam", "first"), s=(sel, "max"))
    model = lead.sort_values(["f", "s"], ascending=[True, False]).index[0]
    d = have[have["model"] == model]
    sizes = sorted(d["train_size"].dropna().unique())
    out = []
    for size in dict.fromkeys([sizes[0], sizes[-1]]):
        r = d[d["train_size"] == size].sort_values(sel, ascending=False).iloc[0]
        ex = r["pos_line_excess"]
        label = (f"{r['model']}, {size_words(size)} images\nseed {int(r['seed'])}, {on} "
                 f"{100 * r[sel]:.1f}%" + (f", excess {ex:.2f}" if pd.notna(ex) else ""))
        out.append((label, arrays[r["run_id"]]["pos_sim"]))
    return out, on
