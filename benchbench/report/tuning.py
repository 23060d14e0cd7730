"""Is the tuning bracketed? Where the value a selection chose on a swept axis (learning rate,
weight decay) sits at an edge of the grid that was tried, the best value may lie outside
it: say so, and name the value to add. Used by the report's summary and benchbench-status."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from benchbench.report.load import _drop_path, _strip_seed
from benchbench.results import identity_config

AXES = ("train.lr", "train.weight_decay")  # tuned by selection: the report keeps the best


def _get(cfg: Any, path: str) -> Any:
    for k in path.split("."):
        if not isinstance(cfg, dict) or k not in cfg:
            return None
        cfg = cfg[k]
    return cfg


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def _fmt(v: float) -> str:
    return f"{v:.2g}"


NAMES = {"train.lr": "learning rate (train.lr)", "train.weight_decay": "weight decay "
         "(train.weight_decay)"}


def _next(grid: np.ndarray, chosen: float) -> float | None:
    """The value one step past the edge, on the grid's own (log) spacing; None past 0."""
    pos = grid[grid > 0]
    if chosen <= 0:
        return None
    if len(pos) >= 2:
        ratio = pos[-1] / pos[-2] if chosen == grid.max() else pos[1] / pos[0]
    else:
        ratio = 10.0  # a grid of 0 and one value: a decade past it
    return float(chosen * ratio if chosen == grid.max() else chosen / ratio)


def grid_edges(rows: pd.DataFrame, axes: Sequence[str] = AXES) -> list[dict[str, Any]]:
    """Per setting (rows equal but for the seed and the tuned axes) whose tried grid has 2+
    values on an axis: the chosen value (best mean `val_top1` when every row has it, else
    the mean of `acc`/`top1`) when it is the grid's smallest or largest, and the value to add.
    """
    if rows.empty or "config" not in rows:
        return []
    score = ("val_top1" if "val_top1" in rows and rows["val_top1"].notna().all() else
             "acc" if "acc" in rows else "top1")
    if score not in rows:
        return []
    groups: dict[str, list[tuple[tuple, float]]] = {}
    model: dict[str, str] = {}
    for _, r in rows.iterrows():
        cfg = r["config"]
        if not isinstance(cfg, dict) or not np.isfinite(_num(r[score])):
            continue
        blob: Any = _strip_seed(identity_config(cfg))
        for a in axes:
            blob = _drop_path(blob, a)
        key = json.dumps(blob, sort_keys=True, default=str)
        groups.setdefault(key, []).append((tuple(_num(_get(cfg, a)) for a in axes), _num(r[score])))
        ep = _get(cfg, "train.epochs")
        model[key] = str(r.get("model") or _get(cfg, "model.name") or "?") + (
            f" at {ep} epochs" if ep is not None else "")
    out = []
    tuned = 0
    for key, vals in groups.items():
        df = pd.DataFrame([(*v, s) for v, s in vals], columns=[*axes, "_s"])
        means = df.groupby(list(axes), dropna=False)["_s"].mean()
        if len(means) < 2:
            continue
        tuned += 1
        best = means.idxmax()
        best = best if isinstance(best, tuple) else (best,)
        for j, a in enumerate(axes):
            grid = np.unique(df[a].dropna().to_numpy(float))
            v = best[j]
            if len(grid) < 2 or not np.isfinite(v) or grid.min() < v < grid.max():
                continue
            add = _next(grid, v)
            if add is None:
                continue
            out.append(dict(key=key, model=model[key], axis=a, chosen=v, grid=tuple(grid),
                            edge="largest" if v == grid.max() else "smallest", add=add,
                            on="validation" if score == "val_top1" else "test"))
    return [dict(e, n_tuned=tuned) for e in out]


def edge_findings(rows: pd.DataFrame, axes: Sequence[str] = AXES) -> list[str]:
    """One sentence per axis: the settings whose chosen value is at an edge of its grid."""
    edges = grid_edges(rows, axes)
    n_groups = edges[0]["n_tuned"] if edges else 0
    out = []
    for a in axes:
        e = [x for x in edges if x["axis"] == a]
        if not e:
            continue
        same: dict[tuple, int] = {}
        for x in e:
            k = (x["model"], x["chosen"], x["edge"], x["grid"], x["add"])
            same[k] = same.get(k, 0) + 1
        items = "; ".join(
            f"{m}{f' ({c} settings)' if c > 1 else ''}: {_fmt(v)}, the {edge} of "
            f"[{', '.join(_fmt(g) for g in grid)}] (add {_fmt(add)})"
            for (m, v, edge, grid, add), c in same.items())
        out.append(f"Tuning not bracketed: the {e[0]['on']}-chosen {NAMES.get(a, a)} is at an "
                   f"edge of the grid tried for {len(e)} of {n_groups} setting(s), so a better "
                   f"value may lie outside it: {items}.")
    return out


def status_lines(row_paths: Iterable[str]) -> list[str]:
    """For benchbench-status: the edge findings of the ok rows at `row_paths`."""
    from benchbench import results

    rows = []
    for p in row_paths:
        try:
            r = results.read_row(p)
        except Exception:  # noqa: BLE001 - status lists broken rows itself
            continue
        if r.get("status") == "ok":
            rows.append(r)
    return edge_findings(pd.DataFrame(rows)) if rows else []
