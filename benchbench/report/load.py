"""Rows -> the frames the report works on: ok train rows, measure rows, failed rows, and
seed-aggregated "points" (one per config, seeds pooled as mean, s.d. and the raw values).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchbench import families
from benchbench.errors import ResultsError
from benchbench.report.superseded import _drop_path, drop_superseded
from benchbench.results import identity_config, load_dataframe
from benchbench.units import fmt_flops

METRIC_LABEL = {"top1": "top-1", "top5": "top-5", "fewshot_top1": "few-shot top-1"}
COMPUTE_COLUMNS = ("train_flops", "pretrain_flops")
METRIC_HINT = {
    "top1": "no run finished its evaluation; check the failed rows.",
    "top5": "top-5 is only recorded for datasets with more than 5 classes; use --metric top1.",
    "fewshot_top1": "few-shot accuracy is measured by runs with eval.fewshot=true (or by "
                    "task=probe); run the study with eval.fewshot=true, or drop --metric "
                    "fewshot_top1.",
}
COMPUTE_HINT = {
    "pretrain_flops": "only transfer rows (task=transfer) record their pre-training compute; "
                      "drop --compute pretrain_flops (the default axis is train_flops).",
}
TASK_ORDER = ("train", "transfer", "probe", "measure")

# Columns that identify a point when a row has no config dict (older or hand-made rows).
POINT_COLUMNS = (
    "task", "family", "model", "patch_size", "image_size", "num_classes", "dataset",
    "train_size", "samples_seen", "batch_size", "steps", "epochs", "lr", "precision",
    "pretrain_dataset", "pretrain_train_size", "fewshot_shots",
)


def families_in(df: pd.DataFrame) -> list[str]:
    """The families present, in the family table's order (unknown ones last)."""
    return sorted(df["family"].dropna().unique(), key=families.sort_key)


def _strip_seed(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _strip_seed(v) for k, v in obj.items() if k != "seed"}
    if isinstance(obj, list | tuple):
        return [_strip_seed(v) for v in obj]
    return obj


def point_key(row: Mapping[str, Any]) -> str:
    """Rows with the same key are the same config except for the seed (any key named
    `seed` in the resolved config, at any depth); without a config, POINT_COLUMNS decide."""
    cfg = row.get("config")
    if isinstance(cfg, Mapping) and cfg:
        blob: Any = _strip_seed(identity_config(cfg))
    else:
        blob = {c: row.get(c) for c in POINT_COLUMNS}
    return json.dumps(blob, sort_keys=True, default=str)


def _config_get(cfg: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(cfg, Mapping):
            return None
        cfg = cfg.get(k)
    return cfg


def drop_duplicates(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per run_id (a row is one run, never an extra seed): the same run found in two
    results dirs counts once; where the copies differ, the one started last is kept."""
    ids = df["run_id"]
    dup = ids.notna() & ids.duplicated(keep=False)
    if not dup.any():
        return df, []
    started = pd.to_datetime(df["started_at"], errors="coerce", utc=True)
    order = df.assign(_t=started).sort_values("_t", kind="stable", na_position="first")
    keep = order[~(order["run_id"].notna() & order["run_id"].duplicated(keep="last"))]
    n_extra = int(dup.sum() - df.loc[dup, "run_id"].nunique())
    notes = [f"{n_extra} duplicate row(s) (same run_id) counted once: a run found in more than "
             f"one results dir is one run, never another seed."]
    differ = []
    for rid, g in df[dup].groupby("run_id", sort=True):
        blobs = {json.dumps(r, sort_keys=True, default=str)
                 for r in g.drop(columns="results_dir", errors="ignore").to_dict("records")}
        if len(blobs) > 1:
            kept = keep.loc[keep["run_id"] == rid].iloc[0]
            differ.append(f"`{rid}` (kept the copy started {kept['started_at']} in "
                          f"{kept.get('results_dir', '?')})")
    if differ:
        notes.append(f"{len(differ)} of them differ between copies; the one started last is "
                     f"kept: " + ", ".join(differ[:5]) + (", ..." if len(differ) > 5 else "") + ".")
    return keep.drop(columns="_t").sort_index(), notes


def is_smoke(df: pd.DataFrame) -> pd.Series:
    """Rows of debug=smoke (config.max_steps set) or found under a results/smoke folder."""
    capped = df["config"].map(lambda c: _config_get(c, "max_steps") is not None)
    where = df.get("results_dir", pd.Series("", index=df.index)).fillna("")
    return capped | where.map(lambda d: "smoke" in Path(d).parts)


def split_smoke(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(rows, smoke rows, note). A smoke row ran 2 steps to test the pipeline: it is never a
    result. When every row is a smoke row they are kept, and the note says what they are."""
    smoke = is_smoke(df)
    if not smoke.any():
        return df, df.iloc[:0], []
    if smoke.all():
        return df, df.iloc[:0], [f"Every row here ({len(df)}) is a smoke row (debug=smoke, a few "
                                 f"steps each): it checks the pipeline; its numbers are not results."]
    n = int(smoke.sum())
    return df[~smoke], df[smoke], [f"{n} smoke row(s) (debug=smoke: config.max_steps set, or "
                                   f"under results/smoke) left out: a smoke row is not a result."]


def task_counts(df: pd.DataFrame) -> str:
    """'2 train, 1 transfer, 1 probe' (tasks in the registry's order, zero counts left out)."""
    c = df["task"].fillna("train").value_counts()
    order = [t for t in TASK_ORDER if t in c] + sorted(t for t in c.index if t not in TASK_ORDER)
    return ", ".join(f"{int(c[t])} {t}" for t in order) or "none"


def _number(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f


def budgets(df: pd.DataFrame) -> pd.Series:
    """The FLOP budget each run was given: its row's `train_flops_budget`, else (rows written
    before that column) its config's `train.flops`; NaN for runs without one."""
    from_config = df["config"].map(lambda c: _number(_config_get(c, "train", "flops")))
    if "train_flops_budget" not in df:
        return from_config
    given = pd.to_numeric(df["train_flops_budget"], errors="coerce")
    return given.where(given.notna(), from_config)


@dataclass
class Study:
    """Everything the report needs, split once."""

    dirs: list[Path]
    df: pd.DataFrame  # all rows, as loaded
    broken: list[tuple[Path, str]]
    train: pd.DataFrame  # ok train rows on `dataset` with `acc` (fraction) and `compute`
    measure: pd.DataFrame  # ok measure-only rows
    not_ok: pd.DataFrame  # status != ok
    metric: str
    compute: str
    dataset: str | None
    names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # rows not counted, and why (the summary)
    smoke: pd.DataFrame | None = None  # smoke rows (debug=smoke) left out of the report

    @property
    def metric_label(self) -> str:
        label = METRIC_LABEL.get(self.metric, self.metric)
        if self.metric == "fewshot_top1" and len(self.train) and \
                probe_on_training_data(self.train).all():
            return f"{label} ({PROBE_ON_TRAIN})"  # never read as transfer
        return label

    @property
    def chance(self) -> float | None:
        """Chance accuracy of the compared rows: 1/num_classes (top-5: 5/num_classes)."""
        nc = self.train["num_classes"].dropna().unique() if len(self.train) else []
        if len(nc) != 1 or nc[0] < 2:
            return None
        return min(1.0, (5 if self.metric == "top5" else 1) / float(nc[0]))


def load_study(
    dirs: str | os.PathLike | Sequence[str | os.PathLike],
    metric: str = "top1",
    compute: str = "train_flops",
    dataset: str | None = None,
) -> Study:
    """Load one or several results dirs. Raises ResultsError for a missing dir or one with
    no row files at all (the CLI turns that into exit code 2)."""
    if isinstance(dirs, str | os.PathLike):
        dirs = [dirs]
    dirs = [Path(d) for d in dirs]
    for d in dirs:
        if not d.is_dir():
            raise ResultsError(f"no results dir at {d}: run a study first or pass its results dir.")
    if metric not in METRIC_LABEL:
        raise ResultsError(f"unknown metric '{metric}'. Valid metrics: {', '.join(METRIC_LABEL)}.")
    if compute not in COMPUTE_COLUMNS:
        raise ResultsError(
            f"unknown compute column '{compute}'. Valid: {', '.join(COMPUTE_COLUMNS)}."
        )
    frames, broken = [], []
    for d in dirs:
        f, b = load_dataframe(d)
        frames.append(f.assign(results_dir=str(d)))
        broken += b
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if df.empty and not broken:
        where = ", ".join(str(d / "runs") for d in dirs)
        raise ResultsError(f"no result rows (*.json) under {where}: run a study first.")
    df, left_out = drop_duplicates(df.reset_index(drop=True))
    df, superseded_note = drop_superseded(df)
    left_out += superseded_note
    df, smoke, smoke_note = split_smoke(df)
    left_out += smoke_note
    notes: list[str] = []

    task_cfg = df["config"].map(lambda c: _config_get(c, "task", "name"))
    df["task"] = df["task"].where(df["task"].notna(), task_cfg).fillna("train")
    df["point"] = [point_key(r) for r in df.to_dict("records")]
    df["budget"] = budgets(df)
    df["world_size"] = pd.to_numeric(df["world_size"], errors="coerce")
    df["device_hours"] = df["wall_s"] / 3600.0 * df["world_size"].fillna(1)

    ok = df["status"] == "ok"
    measure = df[ok & (df["task"] == "measure")].copy()
    train = df[ok & (df["task"] != "measure")].copy()
    not_ok = df[~ok].copy()

    if metric == "top1" and train["top1"].notna().sum() == 0 and train["fewshot_top1"].notna().any():
        metric = "fewshot_top1"
        notes.append("No row has top-1; accuracy is the few-shot top-1 (fewshot_top1).")
    no_metric = train[metric].isna()
    if len(train) and no_metric.all():
        raise ResultsError(f"no ok row has {metric}: {METRIC_HINT[metric]}")
    if no_metric.any():
        notes.append(f"{int(no_metric.sum())} ok train row(s) have no {metric}; left out.")
    train = train[~no_metric]

    if compute != "train_flops":
        notes.append(f"The compute axis is `{compute}` (not train_flops).")
        no_compute = train[compute].isna()
        if len(train) and no_compute.all():
            raise ResultsError(f"no ok row has {compute}: {COMPUTE_HINT[compute]}")
        if no_compute.any():
            notes.append(f"{int(no_compute.sum())} ok row(s) have no {compute} (they are not "
                         f"transfer rows); left out of the plots.")
        train = train[~no_compute]
    counts = train["dataset"].fillna("?").value_counts()
    if dataset is None and len(counts):
        dataset = sorted(counts.index, key=lambda k: (-counts[k], k))[0]
    if dataset is not None and len(counts):
        if dataset not in counts.index:
            raise ResultsError(
                f"no ok rows on dataset '{dataset}'. Datasets in these rows: "
                f"{', '.join(map(str, counts.index))}."
            )
        others = {k: int(v) for k, v in counts.items() if k != dataset}
        if others:
            notes.append(
                f"Accuracy is compared on {dataset} only; rows on other datasets are in the "
                f"run table but not in the plots: "
                + ", ".join(f"{k} ({v})" for k, v in others.items())
                + ". Pick one with --dataset."
            )
        train = train[train["dataset"].fillna("?") == dataset]
    own = probe_on_training_data(train)
    if own.any():
        notes.append(f"{int(own.sum())} row(s) with a few-shot top-1 probe on the training data "
                     f"(eval.fewshot_data unset): that number says how well the trained classes "
                     f"separate, not how the features transfer.")
    train["acc"] = train[metric].astype(float)
    train["compute"] = train[compute].astype(float)
    if compute != "train_flops":
        train["budget"] = np.nan  # FLOP budgets (train.flops) are not on this axis
    train = fill_speed_from_measure(train, measure)
    names = sorted({str(s) for s in df["study"].dropna()}) or [d.name for d in dirs]
    return Study(
        dirs=dirs, df=df, broken=list(broken), train=train.reset_index(drop=True),
        measure=measure.reset_index(drop=True), not_ok=not_ok.reset_index(drop=True),
        metric=metric, compute=compute, dataset=dataset, names=names, notes=notes,
        left_out=left_out, smoke=smoke,
    )


PROBE_ON_TRAIN = "probe on the training data"


def probe_on_training_data(df: pd.DataFrame) -> pd.Series:
    """Rows whose few-shot probe read the data their features were trained on (the
    pre-training data of a transfer row): fewshot_dataset null (older rows) or equal to it."""
    if "fewshot_top1" not in df or not len(df):
        return pd.Series(False, index=df.index)
    trained_on = df["pretrain_dataset"].where(df["pretrain_dataset"].notna(), df["dataset"]) \
        if "pretrain_dataset" in df else df["dataset"]
    probed = df["fewshot_dataset"] if "fewshot_dataset" in df else pd.Series(None, index=df.index)
    return df["fewshot_top1"].notna() & (probed.isna() | (probed == trained_on))


def probe_data_label(df: pd.DataFrame) -> pd.Series:
    """The run table's "few-shot data": the probe's dataset, or that it is the training data."""
    probed = df["fewshot_dataset"] if "fewshot_dataset" in df else pd.Series(None, index=df.index)
    label = probed.where(df["fewshot_top1"].notna(), None) if "fewshot_top1" in df else probed
    return label.where(~probe_on_training_data(df), PROBE_ON_TRAIN)


SPEED_COLUMNS = ("infer_img_per_s", "peak_mem_bytes", "max_batch_size")


def fill_speed_from_measure(train: pd.DataFrame, measure: pd.DataFrame) -> pd.DataFrame:
    """Speed and memory of a train row come from the `task=measure` rows of the same model
    and input size when there are any (median over them: one measurement per architecture,
    not one per training run, whose speed varies with the machine's load); else the train
    row keeps its own. `speed_from_measure` says which."""
    train = train.copy()
    train["speed_from_measure"] = False
    if measure.empty or train.empty:
        return train
    med = measure.groupby(["model", "image_size"])[list(SPEED_COLUMNS)].median()
    keys = list(zip(train["model"], train["image_size"]))
    has = np.array([k in med.index for k in keys], dtype=bool)
    for c in SPEED_COLUMNS:
        vals = np.array([med.at[k, c] if h else np.nan for k, h in zip(keys, has)], dtype=float)
        train[c] = np.where(has, vals, pd.to_numeric(train[c], errors="coerce"))
    train["speed_from_measure"] = has
    return train


SWEPT = ("train.lr",)  # axes the report maximises over (by validation accuracy when it can)


def setting_key(row: Mapping[str, Any], swept: Sequence[str] = SWEPT) -> str | None:
    """Rows with the same key differ only in the seed and the `swept` config paths (e.g. a
    learning-rate sweep). None for a row without a config dict (its own setting)."""
    cfg = row.get("config")
    if not (isinstance(cfg, Mapping) and cfg) or not swept:
        return None
    blob: Any = _strip_seed(identity_config(cfg))
    for path in swept:
        blob = _drop_path(blob, path)
    return json.dumps(blob, sort_keys=True, default=str)


def selection_column(rows: pd.DataFrame, select: str | None = "val_top1") -> str | None:
    """The column every selection uses: `select` (validation accuracy) when every row has
    it, else None (select on the reported metric itself, i.e. on test)."""
    if select and select in rows and len(rows) and rows[select].notna().all():
        return select
    return None


def aggregate_points(
    rows: pd.DataFrame, value: str = "acc", by: Iterable[str] = ("point",),
    select: str | None = "val_top1", swept: Sequence[str] = SWEPT,
) -> pd.DataFrame:
    """One row per point: descriptive columns of the first seed, medians of the numeric
    measurement columns, and `value` as mean, s.d. (ddof=1), n and the raw values.

    `sel` is what every selection maximises: the seed mean of `select` (validation
    accuracy) when every row has one, else of `value` (then `selected_on` is "test").
    Points that differ only in a `swept` config path (the learning rate) become one: the
    one with the best `sel`; `n_swept` counts the settings it was chosen from.
    """
    by = list(by)
    extra = [f"{value}_std", "n_seeds", f"{value}_values", "sel", "sel_values", "selected_on",
             "n_swept", "n_test"]
    if rows.empty:
        return pd.DataFrame(columns=list(rows.columns) + extra)
    rows = rows[rows[value].notna()]
    sel_col = selection_column(rows, select)
    out = []
    for key, g in rows.groupby(by, sort=False, dropna=False):
        first = g.iloc[0].to_dict()
        for c in ("compute", "train_flops", "infer_img_per_s", "peak_mem_bytes",
                  "max_batch_size", "device_hours", "wall_s", "flops_per_image", "params"):
            if c in g:
                first[c] = g[c].median()
        vals = g[value].to_numpy(dtype=float)
        first[value] = float(vals.mean())
        first[f"{value}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        first["n_seeds"] = len(vals)
        first[f"{value}_values"] = tuple(vals)
        first["seeds"] = tuple(g["seed"].tolist()) if "seed" in g else ()
        svals = g[sel_col or value].to_numpy(dtype=float)
        first["sel"] = float(svals.mean())
        first["sel_values"] = tuple(svals)
        first["selected_on"] = "validation" if sel_col else "test"
        n = pd.to_numeric(g["eval_samples"], errors="coerce") if "eval_samples" in g else None
        first["n_test"] = float(n.min()) if n is not None and n.notna().any() else np.nan
        first["_setting"] = setting_key(first, swept) or json.dumps(key, default=str)
        out.append(first)
    pts = pd.DataFrame(out)
    best = pts.groupby("_setting", sort=False)["sel"].idxmax()
    n_swept = pts.groupby("_setting", sort=False)["sel"].size()
    pts = pts.loc[best.to_numpy()].copy()
    pts["n_swept"] = n_swept.loc[pts["_setting"]].to_numpy()
    return pts.drop(columns="_setting").reset_index(drop=True)


def model_base(model: str) -> str:
    """'ViT-B/16' -> 'ViT-B' (the size without the patch)."""
    return str(model).split("/")[0]


def dataset_size_slice(points: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Points for the dataset-size axis. When the configs set compute budgets (train.flops),
    only the budget that spans the most dataset sizes is kept: a compute sweep done at the
    full size must not make the largest size look better than the data alone makes it."""
    d = points[points["train_size"].notna()]
    if "budget" in d and d["budget"].notna().any():
        n = d.groupby("budget")["train_size"].nunique()
        if n.max() >= 2 and d["budget"].nunique() > 1:
            b = float(n.idxmax())
            return d[d["budget"] == b], f"at the budget {fmt_flops(b)} (the one with the most dataset sizes)"
    return d, ""
