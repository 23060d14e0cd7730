"""Rows and arrays of the report's internals section: ok rows with internals numbers, their
`internals/<run_id>.npz`, each run's setting named in words, and the position-embedding
row/column excess (a grid score measured against a distance-only fit).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchbench import families
from benchbench.report.load import Study

FIELDS = ("attn_dist_first_px", "attn_dist_last_px", "attn_dist_min_first_px",
          "pos_grid_score", "cnn_rf_last_px")
MIN_GRID = 4  # a patch grid under 4x4 cannot show locality (2x2: every patch neighbours all)


def internals_rows(study: Study) -> pd.DataFrame:
    """Ok rows with any internals number; train rows only when there are any (a fine-tune's
    internals belong to another question than pre-training data size)."""
    df = study.df[study.df["status"] == "ok"]
    cols = [c for c in FIELDS if c in df]
    if not cols:
        return df.iloc[0:0]
    df = df[df[cols].notna().any(axis=1)].copy()
    if (df["task"] == "train").any():
        df = df[df["task"] == "train"]
    for c in ("train_size", "patch_size", "image_size", "seed", "top1", "val_top1", "lr",
              "epochs", "steps", "batch_size", "pretrain_train_size", *cols):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    if "point" not in df:  # hand-made frames: every row its own setting but for the seed
        df["point"] = df.drop(columns=["seed", "run_id"], errors="ignore").astype(str).agg(
            "|".join, axis=1)
    return df


def load_npz(dirs: Sequence[Path], run_id: str, notes: list[str]) -> dict[str, np.ndarray] | None:
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


def size_words(n: float) -> str:
    n = int(n)
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


def epochs_words(e: float) -> str:
    return f"{float(f'{e:.2g}'):g} epochs"


# Columns that name a setting, with how each is written; only those that vary are named.
SETTING_WORDS = (
    ("dataset", str), ("pretrain_dataset", lambda v: f"pre-trained on {v}"),
    ("pretrain_train_size", lambda v: f"{size_words(v)} pre-training images"),
    ("train_size", lambda v: f"{size_words(v)} images"), ("image_size", lambda v: f"{int(v)} px"),
    ("lr", lambda v: f"lr {v:g}"), ("epochs", epochs_words), ("steps", lambda v: f"{int(v)} steps"),
    ("batch_size", lambda v: f"batch {int(v)}"),
)


def varying(rows: pd.DataFrame, within: Sequence[str] = ()) -> list[str]:
    """SETTING_WORDS columns with more than one value (within each `within` group)."""
    out = []
    for c, _ in SETTING_WORDS:
        if c not in rows or c in within:
            continue
        g = rows.groupby(list(within), dropna=False)[c] if within else None
        n = g.nunique().max() if g is not None else rows[c].nunique()
        if n > 1:
            out.append(c)
    if "epochs" in out and "steps" in out:  # one follows the other at a fixed size: say epochs
        out.remove("steps")
    return out


def setting_words(r: pd.Series, cols: Sequence[str]) -> str:
    return ", ".join(f(r[c]) for c, f in SETTING_WORDS if c in cols and pd.notna(r[c]))


def name_settings(rows: pd.DataFrame) -> pd.DataFrame:
    """Columns `setting` (the settings that vary across the rows, the training-set size
    always), `line` (model and the settings other than the size that vary at one size: a
    line of the against-data figure) and `runs` (how many runs share the setting)."""
    panel_cols = ["train_size", *[c for c in varying(rows) if c != "train_size"]]
    line_cols = [c for c in varying(rows, ["model", "train_size"]) if c != "train_size"]
    rows = rows.assign(setting=[setting_words(r, panel_cols) for _, r in rows.iterrows()],
                       line=[" ".join(x for x in (r["model"], setting_words(r, line_cols)) if x)
                             for _, r in rows.iterrows()])
    dup = rows.groupby(["model", "setting"])["point"].transform("nunique") > 1
    if dup.any():  # settings that differ in a config key no column shows
        k = rows.groupby(["model", "setting"])["point"].rank(method="dense").astype(int)
        rows.loc[dup, "setting"] = rows.loc[dup, "setting"] + ", setting " + k[dup].astype(str)
    rows["runs"] = rows.groupby("point")["run_id"].transform("size")
    rows["_fam"] = rows["family"].map(families.sort_key)
    return rows.sort_values(["_fam", "model", *panel_cols, "setting", "seed"], kind="stable")


def runs_words(d: pd.DataFrame) -> str:
    seeds = sorted(int(s) for s in d["seed"].dropna())
    return (f"{len(d)} runs, seeds {', '.join(map(str, seeds))}" if len(d) > 1
            else f"1 run, seed {seeds[0]}" if seeds else "1 run")


def sel_column(rows: pd.DataFrame) -> str:
    """Validation top-1 where every row has it (as the tables select), else test top-1."""
    return "val_top1" if "val_top1" in rows and rows["val_top1"].notna().all() else "top1"


def token_grid(a: dict[str, np.ndarray] | None) -> tuple[int, int] | None:
    return tuple(int(v) for v in a["token_grid"]) if a and "token_grid" in a else None


def line_excess(sim: np.ndarray, degree: int = 3) -> float | None:
    """Row/column excess of a position-similarity [gh, gw, gh, gw]: the coefficient of
    "shares a row or column" in a least-squares fit of the similarity of distinct patch pairs
    to a cubic in their distance plus that indicator. Embeddings whose similarity depends
    only on distance score ~0 (the plain grid score gives them 0.15-0.23 on a 4x4 grid).
    None under a MIN_GRID grid: too few distances to tell the two apart."""
    sim = np.asarray(sim, dtype=np.float64)
    if min(sim.shape[:2]) < MIN_GRID:
        return None
    i, j, k, m = np.indices(sim.shape)
    dist = np.hypot(i - k, j - m)
    pair = dist > 0
    line = ((i == k) | (j == m)) & pair
    X = np.stack([dist[pair] ** p for p in range(degree + 1)] + [line[pair].astype(float)], 1)
    coef, *_ = np.linalg.lstsq(X, sim[pair], rcond=None)
    return float(coef[-1])
