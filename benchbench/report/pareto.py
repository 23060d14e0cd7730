"""Pareto frontiers: the points no other point beats on both axes (pure functions)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def pareto_front(
    x: Sequence[float], y: Sequence[float], minimize_x: bool = True, maximize_y: bool = True
) -> np.ndarray:
    """Indices of the frontier points, sorted by x ascending.

    A point is on the frontier when no other point is at least as good on both axes and
    strictly better on one. Of exact duplicates only the first is kept; NaNs are ignored.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    assert x.shape == y.shape, "x and y must have the same length"
    sx = x if minimize_x else -x
    sy = y if maximize_y else -y
    idx = np.flatnonzero(np.isfinite(sx) & np.isfinite(sy))
    # best x first, then best y first among ties; stable so the first duplicate wins
    order = idx[np.lexsort((np.arange(len(idx)), -sy[idx], sx[idx]))]
    keep, best = [], -np.inf
    for i in order:
        if sy[i] > best:
            keep.append(i)
            best = sy[i]
    keep = np.array(keep, dtype=int)
    return keep[np.argsort(x[keep], kind="stable")]


def pareto_mask(
    x: Sequence[float], y: Sequence[float], minimize_x: bool = True, maximize_y: bool = True
) -> np.ndarray:
    """Boolean mask of the frontier points (see `pareto_front`)."""
    mask = np.zeros(len(np.asarray(x)), dtype=bool)
    mask[pareto_front(x, y, minimize_x, maximize_y)] = True
    return mask


def frontiers(
    points: pd.DataFrame, x: str, y: str = "acc", by: str = "family", minimize_x: bool = True,
    select: str = "sel",
) -> pd.DataFrame:
    """Frontier rows of `points` per `by` group and overall (`frontier_of` = group or 'all'),
    each sorted by x. Chosen on the `select` column (validation accuracy) when every point
    has it, else on y."""
    if select not in points or points[select].isna().any():
        select = y
    parts = []
    groups = [(g, d) for g, d in points.groupby(by, sort=False)] + [("all", points)]
    for name, d in groups:
        d = d[d[x].notna() & d[y].notna()]
        if d.empty:
            continue
        sel = d.iloc[pareto_front(d[x], d[select], minimize_x=minimize_x)].copy()
        sel.insert(0, "frontier_of", name)
        parts.append(sel)
    if not parts:
        return pd.DataFrame(columns=["frontier_of", *points.columns])
    return pd.concat(parts, ignore_index=True)


def owner_segments(front: pd.DataFrame, x: str, by: str = "family") -> list[tuple[str, float, float]]:
    """Consecutive runs of the overall frontier that belong to one group:
    [(group, first x, last x), ...] in x order."""
    segs: list[tuple[str, float, float]] = []
    for g, xv in zip(front[by], front[x]):
        if segs and segs[-1][0] == g:
            segs[-1] = (g, segs[-1][1], xv)
        else:
            segs.append((g, xv, xv))
    return segs
