"""Report findings about what the study measured with: which axes its compute varies along,
where speed and memory come from, and the time spent outside the training loops."""
from __future__ import annotations

import numpy as np
import pandas as pd

from benchbench.report.load import Study


def fmt_sig(v: float, digits: int = 3) -> str:
    """3 significant digits, with thousands separators from 1,000 up: 10124 -> '10,100'."""
    return f"{float(f'{v:.{digits}g}'):,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"


def _count(v: float) -> str:
    return f"{int(v):,}"


def compute_axis_findings(points: pd.DataFrame, compute: str = "train_flops") -> list[str]:
    """What the compute axis varies: the paper's Figure 5 holds the data fixed and varies the
    architecture and the training length; a study whose budgets grow with the training set
    answers the data question (Figures 3/4) in FLOPs. Said from the points, not the header.
    With `compute` = pretrain_flops the data are the pre-training set's."""
    pre = compute == "pretrain_flops"
    size, what = ("pretrain_train_size", "pre-training") if pre else ("train_size", "training")
    need = {"compute", size, "model"}
    if points.empty or not need <= set(points) or points["compute"].nunique() < 2:
        return []
    d = points[points["compute"].notna() & points[size].notna()].copy()
    if d.empty:
        return []
    if pre:  # a transfer row's samples and epochs are its fine-tune's
        d["_passes"] = np.nan
    elif "samples_seen" in d and d["samples_seen"].notna().all():
        d["_passes"] = (d["samples_seen"] / d[size]).round(2)
    elif "epochs" in d:
        d["_passes"] = d["epochs"]
    else:
        d["_passes"] = np.nan
    keys = [c for c in ("model", "patch_size", "image_size") if c in d]
    sizes = sorted(d[size].unique())
    per_arch = d.groupby([*keys, size], dropna=False)["_passes"].nunique()
    length_varies = bool((per_arch > 1).any())
    if len(sizes) == 1:
        how = "the architecture and the training length" if length_varies else "the architecture"
        return [f"The {what} data are fixed ({_count(sizes[0])} images): compute varies through "
                f"{how} only, as in the paper's Figure 5."]
    span = f"{_count(sizes[0])} to {_count(sizes[-1])} images"
    if not length_varies:
        fixed = " at a fixed training length per model" if d["_passes"].notna().any() else ""
        return [f"Compute here grows with the {what}-set size ({span}){fixed}: larger budgets "
                f"also saw more data, so the compute "
                f"frontiers answer the data question (Figures 3/4) in FLOPs, not Figure 5's "
                f"(which holds the data fixed and varies model size and training length)."]
    return [f"Compute varies through the {what}-set size ({span}), the training length and "
            f"the architecture at once: the frontiers mix the data question (Figures 3/4) with "
            f"Figure 5's (fixed data)."]


def speed_findings(study: Study) -> list[str]:
    """Where the report's speed and memory come from: task=measure rows (one measurement per
    architecture) or each training run's own, which varies with the machine's load."""
    t = study.train
    cols = [c for c in ("infer_img_per_s", "peak_mem_bytes", "max_batch_size") if c in t]
    if t.empty or not cols or t[cols].notna().to_numpy().sum() == 0:
        return []
    from_m = t.get("speed_from_measure", pd.Series(False, index=t.index)).astype(bool)
    if from_m.any():
        n_arch = t.loc[from_m, ["model", "image_size"]].drop_duplicates().shape[0]
        s = (f"Speed and memory come from the task=measure rows ({len(study.measure)} rows, "
             f"{n_arch} architecture(s) of the training runs), not from the training runs.")
        own = t.loc[~from_m, "model"].dropna().unique()
        if len(own):
            s += (f" {', '.join(map(str, own))} ha{'s' if len(own) == 1 else 've'} no measure "
                  f"row: {'its' if len(own) == 1 else 'their'} numbers are the training runs' own.")
        return [s]
    s = ("Speed and memory come from each training run's own measurement (no task=measure "
         "rows), so they vary with the machine's load")
    v = t[t["infer_img_per_s"].notna()].groupby(["model", "image_size"])["infer_img_per_s"]
    ratio = (v.max() / v.min())[v.size() > 1] if len(t) else pd.Series(dtype=float)
    if len(ratio):
        s += f" (runs of one architecture differ by up to {ratio.max():.2g}x in img/s here)"
    return [s + "; run `benchbench task=measure` once per architecture for comparable numbers."]


def measure_findings(measure: pd.DataFrame) -> list[str]:
    m = measure[measure["image_size"].notna()]
    if m.empty:
        return []
    top = m["image_size"].max()
    d = m[m["image_size"] == top].groupby("model")[["infer_img_per_s", "max_batch_size"]].median()
    out = []
    if d["infer_img_per_s"].notna().any():
        best = d["infer_img_per_s"].idxmax()
        out.append(f"At {int(top)} px the fastest model is {best} "
                   f"({fmt_sig(d.loc[best, 'infer_img_per_s'])} img/s)")
    if d["max_batch_size"].notna().any():
        big = d["max_batch_size"].idxmax()
        out.append(f"the largest batch fits {big} ({int(d.loc[big, 'max_batch_size'])} images)")
    return ["; ".join(out) + "."] if out else []


def overhead_findings(train: pd.DataFrame) -> list[str]:
    """How much of the runs' wall time was spent outside their training loops (start-up,
    data, FLOP counting, evaluation, timing): the per-run overhead of the study."""
    if train.empty or "train_wall_s" not in train or "wall_s" not in train:
        return []
    d = train[train["train_wall_s"].notna() & train["wall_s"].notna()]
    if "task" in d:  # a transfer row's wall time includes its (separate) pre-training run
        d = d[d["task"].fillna("train") == "train"]
    wall = float(d["wall_s"].sum())
    if d.empty or wall <= 0:
        return []
    frac = 1 - float(d["train_wall_s"].sum()) / wall
    return [f"Time outside the training loops (start-up, data, FLOP counting, evaluation, "
            f"timing): {100 * frac:.0f}% of the {wall / 60:.1f} min the {len(d)} runs took."]
