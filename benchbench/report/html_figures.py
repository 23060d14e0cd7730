"""The report page's plotly figures, as JSON-ready dicts: compute vs accuracy (one trace per
family x data size x patch size, so the page's toggles only flip `visible`) and the
equal-compute panel with each value's basis (run / interpolated / held) as its marker.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from benchbench import families
from benchbench.report.load import families_in
from benchbench.units import fmt_flops

# marker of an equal-compute value by its basis (compare.py): a run at the budget, a value
# interpolated between two frontier runs, or the best of a smaller budget held flat
BASIS_SYMBOL = {"run": "circle", "interpolated": "circle-open", "held": "triangle-right-open"}
MPL_SYMBOL = {"o": "circle", "s": "square", "^": "triangle-up", "D": "diamond", "v": "triangle-down",
              "x": "x", "P": "cross", "*": "star", "p": "pentagon", "h": "hexagon"}
RUN_HOVER = ("<b>%{customdata[0]}</b><br>model %{customdata[1]}, patch %{customdata[2]}<br>"
             "data %{customdata[3]} images, %{customdata[4]} epochs, lr %{customdata[5]}<br>"
             "seed %{customdata[6]}<br>val top-1 %{customdata[7]}, test top-1 %{customdata[8]}<br>"
             "compute %{customdata[9]}<extra></extra>")
MEAN_HOVER = ("<b>mean of seeds %{customdata[6]}</b> (%{customdata[0]})<br>"
              "model %{customdata[1]}, patch %{customdata[2]}<br>data %{customdata[3]} images, "
              "%{customdata[4]} epochs, lr %{customdata[5]}<br>val top-1 %{customdata[7]}, "
              "test top-1 %{customdata[8]}<br>compute %{customdata[9]}<extra></extra>")


def _num(v: Any, fmt: str = ".4g") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "–"
    return format(f, fmt) if math.isfinite(f) else "–"


def _pct(v: Any) -> str:
    """0.8187 -> '81.87%' (a fraction, as rows hold accuracy); '–' when missing."""
    s = _num(pd.to_numeric(v, errors="coerce") * 100, ".2f")
    return s if s == "–" else s + "%"


def _cat(v: Any) -> str:
    """A toggle value: '16' for patch 16.0, 'none' for a CNN's missing patch."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "none" if v is None else str(v)
    return "none" if not math.isfinite(f) else (str(int(f)) if f == int(f) else str(f))


def color(fam: str) -> str:
    """The family's matplotlib colour ('C0', 'tab:red') as hex, the same as in the PNGs."""
    from matplotlib.colors import to_hex

    return to_hex(families.style(fam)[0])


def symbol(fam: str) -> str:
    return MPL_SYMBOL.get(families.style(fam)[1], "circle")


def _empty_layout(xtitle: str, ytitle: str, log_x: bool = True) -> dict[str, Any]:
    return {"xaxis": {"title": {"text": xtitle}, "type": "log" if log_x else "linear",
                      "exponentformat": "SI"},  # 100G, 1T: the report's FLOP ticks
            "yaxis": {"title": {"text": ytitle}}, "hovermode": "closest",
            "margin": {"l": 60, "r": 20, "t": 20, "b": 50},
            "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
            "template": None, "plot_bgcolor": "white"}


def run_customdata(r: pd.Series) -> list[Any]:
    return [str(r["run_id"]), str(r.get("model")), _cat(r.get("patch_size")),
            _cat(r.get("train_size")), _num(r.get("epochs"), ".3g"), _num(r.get("lr"), ".3g"),
            _cat(r.get("seed")), _pct(r.get("val_top1")), _pct(r.get("acc")),
            fmt_flops(float(r["compute"]))]


def compute_accuracy(train: pd.DataFrame, front: pd.DataFrame, ylabel: str,
                     xlabel: str) -> dict[str, Any]:
    """Runs (one point per row) and seed means (hidden until the page's switch), both per
    family x data size x patch, and each family's frontier of seed means."""
    rows = train[np.isfinite(train["compute"].astype(float)) & (train["compute"] > 0)] \
        if len(train) else train
    traces: list[dict[str, Any]] = []
    for fam in families_in(rows):
        first = True
        f = rows[rows["family"] == fam].assign(
            _size=lambda d: d["train_size"].map(_cat), _patch=lambda d: d["patch_size"].map(_cat))
        for (size, patch), g in f.groupby(["_size", "_patch"], sort=True):
            meta = {"kind": "run", "family": fam, "size": size, "patch": patch}
            traces.append({
                "type": "scatter", "mode": "markers", "x": g["compute"].tolist(),
                "y": (g["acc"] * 100).round(4).tolist(), "name": families.label(fam),
                "legendgroup": fam, "showlegend": first, "meta": meta,
                "marker": {"color": color(fam), "symbol": symbol(fam), "size": 8, "opacity": 0.75},
                "customdata": [run_customdata(r) for _, r in g.iterrows()],
                "hovertemplate": RUN_HOVER})
            first = False
            traces.append(_mean_trace(g, fam, meta))
    for fam in families_in(front) if len(front) else []:
        fr = front[front["frontier_of"] == fam].sort_values("compute")
        traces.append({"type": "scatter", "mode": "lines", "x": fr["compute"].tolist(),
                       "y": (fr["acc"] * 100).round(4).tolist(),
                       "name": f"{families.label(fam)} frontier", "legendgroup": fam,
                       "showlegend": False, "hoverinfo": "skip",
                       "meta": {"kind": "frontier", "family": fam},
                       "line": {"color": color(fam), "width": 2}})
    layout = _empty_layout(xlabel, ylabel)
    return {"data": traces, "layout": layout}


def _mean_trace(g: pd.DataFrame, fam: str, meta: dict[str, Any]) -> dict[str, Any]:
    xs, ys, sd, cd = [], [], [], []
    for _, p in g.groupby("point", sort=False):
        r = p.iloc[0].copy()
        acc = p["acc"].astype(float) * 100
        xs.append(float(p["compute"].median()))
        ys.append(round(float(acc.mean()), 4))
        sd.append(round(float(acc.std(ddof=1)), 4) if len(p) > 1 else 0.0)
        r["acc"], r["val_top1"] = acc.mean() / 100, pd.to_numeric(p["val_top1"]).mean()
        c = run_customdata(r)
        c[0] = ", ".join(map(str, p["run_id"]))
        c[6] = ", ".join(p["seed"].map(_cat))
        cd.append(c)
    return {"type": "scatter", "mode": "markers", "x": xs, "y": ys, "name": families.label(fam),
            "legendgroup": fam, "showlegend": False, "visible": False,
            "meta": {**meta, "kind": "mean"},
            "error_y": {"type": "data", "array": sd, "visible": True, "color": color(fam)},
            "marker": {"color": color(fam), "symbol": symbol(fam) + "-open", "size": 11,
                       "line": {"width": 2}},
            "customdata": cd, "hovertemplate": MEAN_HOVER}


def equal_compute(ec: pd.DataFrame | None, metric_label: str) -> tuple[dict[str, Any] | None, str]:
    """(figure, note) from equal_compute.csv: top, each family's best accuracy at each budget
    (marker = basis); bottom, A - B with its 95% CI. Without basis columns (a report from
    before they existed) every marker is a plain one and the note says so."""
    if ec is None or ec.empty or "budget [FLOPs]" not in ec:
        return None, "No equal-compute comparison (fewer than two families with compute)."
    acc = [c for c in ec.columns if c.startswith("A ") and c.endswith("[%]")]
    bacc = [c for c in ec.columns if c.startswith("B ") and c.endswith("[%]")]
    if not acc or not bacc:
        return None, "equal_compute.csv has no accuracy columns."
    has_basis = "A basis" in ec and "B basis" in ec
    note = ("" if has_basis else "This equal_compute.csv records no bases (run / interpolated "
            "/ held): every value is drawn alike. Regenerate the report to see them.")
    per_fam: dict[str, dict[float, tuple[float, str]]] = {}
    for side, col in (("A", acc[0]), ("B", bacc[0])):
        for _, r in ec.iterrows():
            v = pd.to_numeric(r[col], errors="coerce")
            if pd.notna(v):
                basis = str(r[f"{side} basis"]) if has_basis else "value"
                per_fam.setdefault(str(r[side]), {})[float(r["budget [FLOPs]"])] = (float(v), basis)
    traces: list[dict[str, Any]] = []
    for fam, vals in per_fam.items():
        key = next((k for k in families.order() if families.label(k) == fam), fam)
        b = sorted(vals)
        traces.append({"type": "scatter", "mode": "lines+markers", "x": b,
                       "y": [vals[x][0] for x in b], "name": fam, "xaxis": "x", "yaxis": "y",
                       "text": [vals[x][1] for x in b],
                       "marker": {"color": color(key), "size": 10, "line": {"width": 2},
                                  "symbol": [BASIS_SYMBOL.get(vals[x][1], "circle") for x in b]},
                       "line": {"color": color(key), "width": 1},
                       "hovertemplate": f"{fam}: %{{y:.2f}}% at %{{x:.3s}}FLOPs<br>basis: "
                                        "%{text}<extra></extra>"})
    diff = "A - B [pts]"
    if diff in ec:
        for (a, bname), g in ec.groupby(["A", "B"], sort=False):
            g = g[pd.to_numeric(g[diff], errors="coerce").notna()]
            lo = pd.to_numeric(g.get("A - B CI low [pts]"), errors="coerce")
            hi = pd.to_numeric(g.get("A - B CI high [pts]"), errors="coerce")
            called = g["called"].astype(str).tolist() if "called" in g else ["–"] * len(g)
            traces.append({"type": "scatter", "mode": "markers", "x": g["budget [FLOPs]"].tolist(),
                           "y": g[diff].tolist(), "name": f"{a} − {bname}", "xaxis": "x2",
                           "yaxis": "y2", "text": called, "marker": {"color": "black", "size": 8},
                           "error_y": {"type": "data", "symmetric": False,
                                       "array": (hi - g[diff]).fillna(0).tolist(),
                                       "arrayminus": (g[diff] - lo).fillna(0).tolist()},
                           "hovertemplate": f"{a} − {bname}: %{{y:.2f}} pts at %{{x:.3s}}FLOPs"
                                            "<br>called: %{text}<extra></extra>"})
    for basis, sym in BASIS_SYMBOL.items():  # a legend of the bases
        if has_basis:
            traces.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None],
                           "name": f"basis: {basis}", "marker": {"symbol": sym, "color": "grey",
                                                                 "size": 10}})
    layout = {"grid": {"rows": 2, "columns": 1, "pattern": "independent"},
              "xaxis": {"type": "log", "matches": "x2", "showticklabels": False},
              "xaxis2": {"type": "log", "title": {"text": "Training-compute budget [FLOPs]"},
                         "exponentformat": "SI"},
              "yaxis": {"title": {"text": f"best {metric_label} [%]"}, "domain": [0.42, 1]},
              "yaxis2": {"title": {"text": "A − B [pts], 95% CI"}, "domain": [0, 0.36],
                         "zeroline": True},
              "hovermode": "closest", "margin": {"l": 60, "r": 20, "t": 20, "b": 50},
              "plot_bgcolor": "white", "template": None}
    return {"data": traces, "layout": layout}, note


def to_json(obj: Any) -> str:
    """JSON for a <script> block: NaN -> null, and no '</' that would end the script."""
    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v
    return json.dumps(clean(obj), separators=(",", ":")).replace("</", "<\\/")
