"""The row: schema, run ids, atomic writes, provenance, and loading a study into pandas.

The row is the interface (STYLE habit 6): one JSON file per run at
`<results.dir>/runs/<run_id>.json`; the report, the tables and wandb read only rows.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from benchbench.errors import ResultsError

SCHEMA_VERSION = 1

# Contract (DESIGN.md "Row schema"); order is the column order of tables and CSVs.
ROW_FIELDS: tuple[str, ...] = (
    "run_id", "study", "status", "error", "family", "model", "patch_size", "image_size",
    "num_classes", "params", "flops_per_image", "train_flops", "samples_seen", "dataset",
    "train_size", "seed", "top1", "top5", "fewshot_top1", "infer_img_per_s", "train_img_per_s",
    "peak_mem_bytes", "max_batch_size", "mfu", "device", "precision", "torch_version",
    "timm_version", "git_sha", "started_at", "wall_s", "config",
)
# Extra columns beyond the contract (all nullable); documented in the README.
EXTRA_FIELDS: tuple[str, ...] = (
    "schema_version", "task", "batch_size", "steps", "epochs", "lr", "final_loss",
    "diverged_step", "train_wall_s", "overhead_s", "infer_img_per_s_spread",
    "train_img_per_s_spread", "peak_mem_train_bytes", "peak_mem_infer_bytes", "peak_flops",
    "macs_per_image", "fewshot_shots", "resumed", "hostname", "world_size",
    "pretrain_run_id", "pretrain_dataset", "pretrain_train_size", "pretrain_flops",
    "finetune_flops", "fewshot", "peak_mem_sum_bytes", "eval_samples", "retry_of",
    "train_flops_budget",
    "val_top1", "val_size", "augment", "best_step", "stopped_early", "prior_wall_s",
    "fewshot_dataset", "fewshot_per_draw", "peak_flops_source", "threads", "error_type",
    "slurm_job_id", "slurm_array_task_id", "log_path", "weights_path",
    "replayed_from",  # task=replay: the pool row this row was copied from
    "effective_lr", "drop_rate", "drop_path_rate", "randaug", "mixup_alpha",
)
# What the model learned (benchbench.internals, paper Figure 7); null where it does not apply.
INTERNALS_FIELDS: tuple[str, ...] = (
    "attn_dist_first_px", "attn_dist_last_px", "attn_dist_min_first_px", "attn_dist_mean_px",
    "attn_prefix_mass_mean", "pos_grid_score", "cnn_rf_last_px",
    "attn_dist_renorm_first_px", "attn_dist_renorm_mean_px",  # patch weights rescaled to sum 1
)
EXTRA_FIELDS += INTERNALS_FIELDS
STATUSES = ("ok", "failed", "oom", "diverged", "interrupted", "skipped")

# Keys that do not change what a run computes: excluded from the run_id hash.
_NON_IDENTITY_KEYS = (
    "results", "hydra", "wandb", "study", "quiet", "verbose", "progress", "local_gpus", "threads",
    "distributed",  # how many GPUs run a point does not change it (the row has world_size)
)


class NewerSchemaError(ResultsError):
    """A row written by a newer benchbench: read it with that version; never overwrite it."""


_SECRET_RE = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.I)
_SECRET_ARG_RE = re.compile(
    r"([\w.+~/-]*(?:api[_-]?key|token|secret|password|passwd|credential)[\w.-]*)=([^,\s'\"]+)",
    re.I)


def empty_row() -> dict[str, Any]:
    """A row with every column present and null (never a made-up value)."""
    row = {k: None for k in ROW_FIELDS + EXTRA_FIELDS}
    row["schema_version"] = SCHEMA_VERSION
    return row


# Keys added after results existed (dotted paths for nested ones): null means the old
# behaviour, so a null one is left out and every earlier row keeps its run_id (a relaunch
# still skips it). A new config key that changes nothing when unset belongs here.
NULL_NEUTRAL_KEYS: list[str] = [
    "max_steps",
    "eval.fewshot_data",
    "eval.max_samples",
    "model.head_hidden",
    *(f"{pre}{k}" for pre in ("", "task.finetune.")
      for k in ("data.val_split", "data.crop_pct", "train.warmup_steps", "train.lr_by_model",
                "train.eval_every_epochs", "train.early_stop",
                # issue 22: recipes as data (benchbench.optim)
                "train.lr_scaling", "train.lr_ref_batch", "train.epochs_by_model",
                "train.steps_by_dataset", "train.ref_train_size", "train.ref_epochs",
                "train.dropout", "train.drop_path")),
]


def _drop_null_neutral(cfg: dict[str, Any]) -> dict[str, Any]:
    out = dict(cfg)
    for dotted in NULL_NEUTRAL_KEYS:
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:  # copy the path down, never touch the caller's dicts
            if not isinstance(node.get(p), Mapping):
                node = None
                break
            node[p] = dict(node[p])
            node = node[p]
        if node is not None and leaf in node and node[leaf] is None:
            del node[leaf]
    return out


# train.* keys added after transfer rows existed that change how, not what: dropped from the
# fine-tune's train too (the older ones stay there, so earlier transfer run_ids stay).
_NEW_HOW_KEYS = ("keep_checkpoints",)


def identity_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that defines what a run computes."""
    out = _drop_null_neutral({k: v for k, v in cfg.items() if k not in _NON_IDENTITY_KEYS})
    train = dict(out.get("train") or {})
    for k in ("checkpoint_every_s", "log_every", "save_final",  # how, not what
              "micro_batch_size", "grad_checkpointing", "retry_diverged_lr_factor",
              *_NEW_HOW_KEYS):
        train.pop(k, None)
    if train:
        out["train"] = train
    task = out.get("task")
    ft = task.get("finetune") if isinstance(task, Mapping) else None
    if isinstance(ft, Mapping) and isinstance(ft.get("train"), Mapping):
        ft_train = {k: v for k, v in ft["train"].items() if k not in _NEW_HOW_KEYS}
        out["task"] = {**task, "finetune": {**ft, "train": ft_train}}
    data = out.get("data")
    if isinstance(data, Mapping):
        data = {k: v for k, v in data.items() if k != "num_workers"}  # how fast, not what
        if data.get("fingerprint"):  # the dataset is its content: a copy elsewhere is the same
            data.pop("root", None)
        out["data"] = data
    if isinstance(out.get("eval"), Mapping):  # internals, curve evals: extra measures, not the run
        out["eval"] = {k: v for k, v in out["eval"].items()
                       if k not in ("internals", "internals_images", "every_steps")}
    task = out.get("task")
    ft = task.get("finetune") if isinstance(task, Mapping) else None
    if isinstance(ft, Mapping) and isinstance(ft.get("train"), Mapping):
        # the fine-tune's log_every too; its other how-keys were in transfer run_ids already
        out["task"] = {**task, "finetune": {
            **ft, "train": {k: v for k, v in ft["train"].items() if k != "log_every"}}}
    return out


def run_id_of(cfg: Mapping[str, Any]) -> str:
    """Stable 12-hex-digit hash of the resolved config minus output/launcher keys."""
    blob = json.dumps(identity_config(cfg), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def redact(obj: Any) -> Any:
    """Replace the value of any key that looks like a secret (api_key, token, ...), also
    inside `key=value` strings (command-line overrides: +wandb.api_key=...)."""
    if isinstance(obj, str):
        return _SECRET_ARG_RE.sub(r"\1=***", obj)
    if isinstance(obj, Mapping):
        return {
            k: ("***" if _SECRET_RE.search(str(k)) and v not in (None, "") else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj


def row_path(results_dir: str | os.PathLike, run_id: str) -> Path:
    return Path(results_dir) / "runs" / f"{run_id}.json"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """The one atomic writer: `write(f)` fills a temp file in the same directory, then fsync
    + rename, so readers see the old file or the new one, never half of one; a failure (disk
    full) leaves the old file and no temp file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ResultsError(
            f"cannot write to {path.parent}: {e.strerror}. Set results.dir=<a writable folder>."
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) atomically (atomic_write)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_row(row: Mapping[str, Any], results_dir: str | os.PathLike) -> Path:
    """Write one row atomically to `<results_dir>/runs/<run_id>.json`; returns the path."""
    assert row.get("run_id"), "a row needs a run_id"
    assert row.get("status") in STATUSES, f"bad status {row.get('status')!r}"
    full = empty_row()
    full.update(row)
    full["config"] = redact(_finite(full.get("config")))
    path = row_path(results_dir, full["run_id"])
    atomic_write_text(path, json.dumps(full, indent=1, default=_json_default, allow_nan=False) + "\n")
    return path


def _finite(obj: Any) -> Any:
    """Config values inf/nan (train.epochs=inf) as the strings the user typed: JSON has no inf."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sanitize(value: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN; a metric that is not a number was not measured)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def read_row(path: str | os.PathLike) -> dict[str, Any]:
    """Read one row; a broken file raises ResultsError naming the file (never deletes it)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad UTF-8/JSON, huge ints
        raise ResultsError(f"{path}: not a readable JSON row ({type(e).__name__}: {str(e)[:200]}); "
                           f"it is kept, not deleted.") from None
    if not isinstance(data, dict) or "run_id" not in data or "status" not in data:
        raise ResultsError(f"{path}: not a benchbench row (no run_id/status); it is kept.")
    version = data.get("schema_version", 1)
    if not isinstance(version, int):
        raise ResultsError(f"{path}: schema_version {version!r} is not an integer; it is kept.")
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"{path}: row schema version {version!r} is newer than this benchbench "
            f"({SCHEMA_VERSION}); upgrade benchbench to read it."
        )
    problem = row_problem(data)
    if problem:
        raise ResultsError(f"{path}: {problem}; it is kept, not read (fix or remove it).")
    row = empty_row()
    row.update(data)  # older schema: missing columns become null
    return row


# Value checks on read: a hand-edited or damaged value is a broken row, never a finding.
FRACTION_FIELDS = ("top1", "top5", "fewshot_top1", "val_top1")  # accuracies in [0, 1]
COUNT_FIELDS = (  # sizes, counts and rates: numbers >= 0
    "params", "flops_per_image", "macs_per_image", "train_flops", "train_flops_budget",
    "samples_seen", "train_size", "num_classes", "image_size", "patch_size", "batch_size",
    "steps", "epochs", "wall_s", "train_wall_s", "infer_img_per_s", "train_img_per_s",
    "peak_mem_bytes", "max_batch_size", "pretrain_flops", "finetune_flops", "world_size",
)


def row_problem(data: Mapping[str, Any]) -> str | None:
    """What makes a parsed row unusable (a wrong type or an out-of-range value), or None."""
    if data.get("status") not in STATUSES:
        return f"status {data.get('status')!r} is not one of {', '.join(STATUSES)}"
    if not isinstance(data.get("run_id"), str) or not data["run_id"]:
        return f"run_id {data.get('run_id')!r} is not a string"
    for k in FRACTION_FIELDS + COUNT_FIELDS:
        v = data.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return f"{k}={v!r} is not a number"
        if v < 0 or (k in FRACTION_FIELDS and v > 1):
            return f"{k}={v!r} is out of range ({'0 to 1' if k in FRACTION_FIELDS else '>= 0'})"
    return None


def iter_row_files(results_dir: str | os.PathLike) -> list[Path]:
    root = Path(results_dir)
    if (root / "runs").is_dir():
        root = root / "runs"
    skip = {"report", "logs", "ckpt", "wandb", "status", "claims"}  # not rows (report/wandb, sweep status, claims)
    return sorted(
        p for p in root.rglob("*.json")
        if not p.name.startswith(".") and not skip & set(p.relative_to(root).parts[:-1])
    )


def load_rows(
    results_dirs: str | os.PathLike | Iterable[str | os.PathLike],
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """All rows under one or more results dirs, and the (file, reason) of each broken one."""
    if isinstance(results_dirs, str | os.PathLike):
        results_dirs = [results_dirs]
    rows, broken = [], []
    for d in results_dirs:
        if not Path(d).exists():
            raise ResultsError(f"no results at {d}: run a study first or pass its results dir.")
        for p in iter_row_files(d):
            try:
                rows.append(read_row(p))
            except ResultsError as e:
                broken.append((p, str(e)))
    return rows, broken


def load_dataframe(results_dirs: Any):
    """Rows of one or several studies as one typed pandas DataFrame (+ broken files)."""
    import pandas as pd

    rows, broken = load_rows(results_dirs)
    df = pd.DataFrame(rows, columns=list(ROW_FIELDS + EXTRA_FIELDS))
    num = ["patch_size", "image_size", "num_classes", "params", "flops_per_image",
           "train_flops", "samples_seen", "train_size", "seed", "top1", "top5", "fewshot_top1",
           "infer_img_per_s", "train_img_per_s", "peak_mem_bytes", "max_batch_size", "mfu",
           "wall_s", "batch_size", "steps", "train_wall_s", "overhead_s", "pretrain_flops",
           "finetune_flops"]
    for c in num:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df, broken


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
            timeout=5, cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """Versions, git sha, host and start time of this process, for every row."""
    import socket

    import timm
    import torch

    return {
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "git_sha": git_sha(),
        "hostname": socket.gethostname(),
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
