"""The one line a point prints when it ends: what its task measured, read from its row."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchbench.units import si


def _si(v: float | None, unit: str) -> str:
    """5146880 -> '5.15 MFLOPs' (units.si: an SI prefix chosen per value, three digits)."""
    m, p = si(v, na="-")
    return m if m == "-" else f"{m} {p}{unit}"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _fewshot(row: dict[str, Any]) -> list[str]:
    """'5-shot=41.2%' (and the other shots), or nothing when no probe ran."""
    shots = row.get("fewshot") or {}
    if not shots and row.get("fewshot_top1") is None:
        return []
    if not shots:
        shots = {str(row.get("fewshot_shots") or "?"): row["fewshot_top1"]}
    return [f"{k}-shot={_pct(v)}" for k, v in sorted(shots.items(), key=lambda kv: int(kv[0])
                                                     if str(kv[0]).isdigit() else 0)]


def _data(row: dict[str, Any]) -> str:
    return f"data={row.get('dataset') or '-'}:{row.get('train_size') or '-'}"


def _speed(row: dict[str, Any]) -> list[str]:
    out = []
    if row.get("infer_img_per_s") is not None:
        out.append(f"infer={row['infer_img_per_s']:.4g} img/s")
    if row.get("train_img_per_s") is not None:
        out.append(f"train={row['train_img_per_s']:.4g} img/s")
    return out


def one_line(row: dict[str, Any], path: Path | str) -> str:
    """`[ok] ViT-micro/8 ...`: each task's own numbers (measure: params, FLOPs, speed,
    memory; probe: few-shot accuracies; transfer: fine-tuned top-1 and few-shot)."""
    task = row.get("task") or "train"
    head = [f"[{row['status']}] {row.get('model') or '?'}"]
    n = row.get("params")
    params = f"params={'-' if n is None else f'{n / 1e6:.3g}M'}"
    flops = f"{_si(row.get('flops_per_image'), 'FLOPs')}/img"
    if task == "measure":
        size = f"{row['image_size']}px" if row.get("image_size") else "-"
        parts = [*head, "measure", size, params, flops]
        speed = _speed(row)
        if speed:
            parts += [*speed, f"batch={row.get('batch_size')}"]
        elif row.get("status") == "ok":
            parts.append("speed not timed (CPU: measure.throughput=true times it)")
        mem = row.get("peak_mem_bytes")
        if mem:
            parts.append(f"mem={_si(mem, 'B')}")
        elif speed:
            parts.append("mem=- (peak memory is measured on CUDA only)")
    elif task == "probe":
        parts = [*head, "probe", _data(row), *(_fewshot(row) or ["few-shot=-"]), params]
    else:
        parts = [*head, _data(row), f"top1={_pct(row.get('top1'))}"]
        if task == "transfer":
            parts[-1] += " (fine-tuned)"
        parts += _fewshot(row)
        parts += [params, flops, f"train={_si(row.get('train_flops'), 'FLOPs')}"]
    parts += [f"wall={row.get('wall_s')}s", f"-> {path}"]
    return " ".join(parts)
