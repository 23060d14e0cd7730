"""gpu_bench's rows: point configs, the shared row builder, the one failure path, the tables.

Every worker measures through `run_point`, which turns an exception into a row via
`failures.classify` (timm benchmark.py's single `_try_run`): failures are data, one row per
point. The tables are the report's Markdown writer (`report.tables.to_markdown`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FIG12_COLUMNS = ("model", "image_size", "status", "infer_img_per_s", "infer_img_per_s_spread",
                 "batch_size", "max_batch_size", "max_batch_at_limit", "peak_mem_infer_bytes",
                 "flops_per_image", "infer_mfu", "params", "error")
DATA_COLUMNS = ("model", "image_size", "status", "batch_size", "train_img_per_s",
                "resident_img_per_s", "data_path_ratio", "error")
DDP_COLUMNS = ("model", "image_size", "status", "batch_size", "compile", "plain_img_per_s",
               "ddp_img_per_s", "ddp_overhead", "ddp_backend", "error")
MFU_COLUMNS = ("model", "image_size", "status", "batch_size", "train_img_per_s",
               "train_img_per_s_spread", "mfu", "peak_flops", "peak_mem_train_bytes",
               "train_warmup_s", "flops_per_image", "params", "error")


def model_cfg(key: str, patch: int | None, image_size: int | None = None) -> dict[str, Any]:
    """The model config node of a registry key; pads to the patch when it does not divide
    the image (ViT-H/14 at 64/128/384/512 px: timm's dynamic padding, ceil(s/14)^2 tokens)."""
    cfg: dict[str, Any] = {"name": key}
    if patch is not None:
        cfg["patch_size"] = patch
        if image_size is not None and image_size % patch:
            cfg["pad_to_patch"] = True
    return cfg


def point_config(part: str, model: dict[str, Any], *, image_size: int, batch_size: int | None,
                 precision: str, device: str, compile: bool, channels_last: bool,
                 quick: bool) -> dict[str, Any]:
    """The resolved config of one measured point; its hash is the row's run_id."""
    return {
        "model": model,
        "data": {"image_size": image_size},
        "task": {"name": "measure", "num_classes": 1000, "in_chans": 3},
        "device": device, "precision": precision, "compile": compile,
        "channels_last": channels_last,
        "measure": {"batch_size": batch_size, "bench": f"gpu_bench.{part}", "quick": quick},
        "study": {"name": f"gpu_bench_{part}"},
    }


def fig12_point_config(key: str, patch: int | None, image_size: int, device: str,
                       quick: bool) -> dict[str, Any]:
    """Config of one Figure 12 point (bf16 on CUDA, channels_last for convolutional families)."""
    from benchbench import models
    from benchbench.families import FAMILIES

    cuda = device.startswith("cuda")
    model = model_cfg(key, patch, image_size)
    conv = cuda and FAMILIES.get(models.family_of(model)).conv
    return point_config("fig12", model, image_size=image_size, batch_size=None,
                        precision="bf16" if cuda else "fp32", device=device, compile=False,
                        channels_last=conv, quick=quick)


def build_measure_row(part: str, config: dict[str, Any], measured: dict[str, Any], *,
                      status: str = "ok", error: str | None = None,
                      provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """One benchbench row (results.ROW_FIELDS + extras) for a measured point."""
    from benchbench import models, results

    row = results.empty_row()
    if provenance:
        row.update(provenance)
    m = config["model"]
    family = name = patch = None
    try:
        if m.get("name") != "timm":
            family, name, patch = models.family_of(m), models.paper_name(m), \
                models.patch_size_of(m)
        else:
            family, name = "timm", m.get("timm_name")
    except Exception:  # noqa: BLE001 - a name we cannot decode still gets its row
        name = str(m)
    row.update(
        run_id=results.run_id_of(config), study=config["study"]["name"], task="measure",
        status=status, error=error, family=family, model=name, patch_size=patch,
        image_size=config["data"]["image_size"], num_classes=config["task"]["num_classes"],
        precision=config["precision"], config=config,
    )
    row.update({k: results.sanitize(v) for k, v in measured.items()})
    if status != "ok":
        row["status"] = status
        row["error"] = error or row.get("error")
    return row


def write_point_row(row: dict[str, Any], out: str | os.PathLike, part: str) -> None:
    """The row file of one point: `<out>/<part>/runs/<run_id>.json` (atomic)."""
    from benchbench import results

    results.write_row(row, Path(out) / part)


def write_status_row(part: str, config: dict[str, Any], out: str | os.PathLike, *, status: str,
                     error: str, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row of a point that was not measured (skipped, or its worker died): listed,
    never silently dropped."""
    row = build_measure_row(part, config, {}, status=status, error=error, provenance=provenance)
    write_point_row(row, out, part)
    return row


def run_point(part: str, config: dict[str, Any],
              measure: Callable[[dict[str, Any]], tuple[str, str | None] | None], *,
              out: str | os.PathLike, provenance: dict[str, Any], device: Any = None,
              batch_size: int | None = None,
              measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one path of every worker's point: `measure(m)` fills m and may return (status,
    error); an exception becomes an oom/failed row via failures.classify, keeping what was
    measured before it. Frees the device's cache afterwards; writes and returns the row."""
    from benchbench.failures import classify
    from benchbench.runtime import free_memory

    m: dict[str, Any] = {} if measured is None else measured
    try:
        status, error = measure(m) or ("ok", None)
    except Exception as e:  # noqa: BLE001 - failures are data: one row per point
        fields = classify(e, batch_size=batch_size, where=part)
        status, error = fields.pop("status"), fields.pop("error")
        m.update(fields)  # e.g. diverged_step
    finally:
        if device is not None:
            free_memory(device)  # the point's model is gone: start the next one clean
    row = build_measure_row(part, config, m, status=status, error=error,
                            provenance=provenance)
    write_point_row(row, out, part)
    return row


def fmt(v: Any) -> str:
    """A table cell: 4 significant digits, whole numbers above 1e4, empty for missing."""
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:
            return ""
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def write_rows_table(rows: Sequence[dict[str, Any]], columns: Sequence[str],
                     stem: str | os.PathLike, title: str = "",
                     notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """rows -> `<stem>.csv` (raw values) and `<stem>.md` (rounded), same columns: the
    report's (raw, display) frames and its Markdown writer, plus a title and notes."""
    import pandas as pd

    from benchbench.report.tables import to_markdown
    from benchbench.results import atomic_write_text

    stem = Path(stem)
    raw = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=list(columns),
                       dtype=object)
    disp = raw.map(fmt)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    atomic_write_text(csv_path, raw.to_csv(index=False))
    lines = [f"# {title}", ""] if title else []
    lines.append(to_markdown(disp))
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path
