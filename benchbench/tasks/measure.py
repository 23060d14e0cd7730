"""task=measure: params, FLOPs and (on a GPU) speed, memory and largest batch, on random input.

On a GPU it measures in a fresh process by default: allocator state left by an earlier model
changes memory and speed numbers (one model per process, as timm's bulk_runner).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def run(cfg: Any, row: dict[str, Any], *, rdir: Path | None = None, run_id: str | None = None,
        identity: dict[str, Any] | None = None) -> None:
    from benchbench.runtime import resolve_device

    device = resolve_device(cfg.device)
    isolate = cfg.measure.get("isolate", "auto")
    if isolate is True or (isolate == "auto" and device.type == "cuda"):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from omegaconf import OmegaConf

        blob = OmegaConf.to_container(cfg, resolve=True)
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            row.update(pool.submit(_measure_child, blob, dict(row)).result())
    else:
        _measure_here(cfg, row)


def _measure_child(blob: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    _measure_here(OmegaConf.create(blob), row)
    return row


def _measure_here(cfg: Any, row: dict[str, Any]) -> None:
    import torch

    from benchbench import measure, models, runtime
    from benchbench.results import EXTRA_FIELDS, ROW_FIELDS

    device = runtime.resolve_device(cfg.device)
    precision = runtime.resolve_precision(cfg.precision, device)
    image_size = int(cfg.data.image_size)
    in_chans, num_classes = int(cfg.task.in_chans), int(cfg.task.num_classes)
    torch.manual_seed(int(cfg.seed))
    model = models.build_model(cfg.model, num_classes, image_size, in_chans)
    mc = cfg.measure
    row.update(num_classes=num_classes, device=runtime.device_label(device),
               precision=precision, batch_size=int(mc.batch_size))
    throughput = mc.throughput == "auto" and device.type == "cuda" or mc.throughput is True
    m = measure.measure_model(
        model, image_size=image_size, in_chans=in_chans, num_classes=num_classes,
        device=device, precision=precision, batch_size=int(mc.batch_size),
        compile=bool(cfg.compile), channels_last=runtime.channels_last(cfg, row["family"], device),
        max_batch=bool(mc.max_batch), repeats=int(mc.repeats), cpu_throughput=throughput,
    )
    columns = set(ROW_FIELDS) | set(EXTRA_FIELDS)
    row.update({k: v for k, v in m.items() if k in row or k in columns})
