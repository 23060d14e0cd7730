"""gpu_bench workers for Figure 12 and MFU: one model each (its own process by default).

A worker reads one JSON task, measures each of its points through `rows.run_point` (the one
failure path) and writes one row per point; `worker_env` and `build` are shared by all.
"""
from __future__ import annotations

import time
from functools import partial
from typing import Any

from benchbench.gpu_bench.plan import say
from benchbench.gpu_bench.rows import (
    fig12_point_config,
    fmt,
    model_cfg,
    point_config,
    run_point,
    write_status_row,
)


def worker_env(task: dict[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    """(device, precision, provenance) of a worker: cuDNN autotuning and TF32 on CUDA (as
    timm's benchmark.py), bf16 on CUDA and fp32 elsewhere, versions and the device name."""
    import torch

    from benchbench import results, runtime

    dev = torch.device(task["device"])
    runtime.setup_cuda(dev)
    prov = results.provenance()
    prov["device"] = runtime.device_label(dev)
    return dev, runtime.resolve_precision(None, dev), prov


def build(cfg: dict[str, Any], image_size: int, dev):
    import torch

    from benchbench import models

    with torch.device(dev):  # init on the GPU: R152x4's 936M weights init in seconds there
        return models.build_model(cfg, 1000, image_size, 3)


def worker_fig12(task: dict[str, Any]) -> None:
    """All sizes of one Figure 12 model: best img/s over batch sizes, max batch, memory."""
    dev, prec, prov = worker_env(task)
    for s in task["sizes"]:
        conf = fig12_point_config(task["key"], task["patch"], s, task["device"], task["quick"])
        if time.time() > task["deadline"]:
            write_status_row("fig12", conf, task["out"], status="skipped",
                             error="time budget spent", provenance=prov)
            continue
        row = run_point("fig12", conf, partial(_fig12_point, task, conf, s, dev, prec),
                        out=task["out"], provenance=prov, device=dev)
        say(f"fig12 {row['model']} @{s}: {row['status']} "
            f"{fmt(row.get('infer_img_per_s'))} img/s, max batch {row.get('max_batch_size')}")


def _fig12_point(task: dict[str, Any], conf: dict[str, Any], s: int, dev, prec: str,
                 m: dict[str, Any]) -> tuple[str, str | None]:
    from benchbench import measure

    cfg, cl, peak = conf["model"], conf["channels_last"], task.get("peak_flops")
    model = build(cfg, s, dev)
    m["params"] = measure.count_params(model)
    m.update(measure.count_flops(model, s))
    by_batch: dict[str, float] = {}
    mem_points: list[tuple[int, int]] = []
    best = None
    for bs in task["batches"]:
        r = measure.infer_throughput(model, batch_size=bs, image_size=s, device=dev,
                                     precision=prec, channels_last=cl, warmup=task["warmup"],
                                     repeats=task["repeats"], min_repeat_s=0.05)
        if r["status"] != "ok":
            break  # a larger batch will not fit either
        by_batch[str(bs)] = r["infer_img_per_s"]
        if r["peak_mem_infer_bytes"]:
            mem_points.append((bs, r["peak_mem_infer_bytes"]))
        if best is None or r["infer_img_per_s"] > best["infer_img_per_s"]:
            best = r
        if time.time() > task["deadline"]:
            break
    if best is not None:
        m.update({k: best[k] for k in ("infer_img_per_s", "infer_img_per_s_spread",
                                       "batch_size", "peak_mem_infer_bytes")})
    m["infer_img_per_s_by_batch"] = by_batch
    m["peak_mem_bytes"] = m.get("peak_mem_infer_bytes")
    if dev.type == "cuda" and time.time() < task["deadline"]:
        m.update(_max_batch(model, s, dev, prec, cl, mem_points, task))
    # inference MFU: forward FLOPs x img/s / peak (the row's `mfu` is training MFU)
    if peak and m.get("infer_img_per_s"):
        m["infer_mfu"] = m["flops_per_image"] * m["infer_img_per_s"] / peak
    m["peak_flops"] = peak
    if best is None:
        return "oom", f"out of memory at batch size {task['batches'][0]}"
    return "ok", None


def _max_batch(model, image_size: int, dev, prec: str, cl: bool,
               mem_points: list[tuple[int, int]], task: dict[str, Any]) -> dict[str, Any]:
    """Largest inference batch, starting from the batch where the peak-memory line through
    the timed batch sizes meets the free memory (then ~3 tries near the maximum)."""
    import torch

    from benchbench import measure

    measure.free_memory(dev)
    free, _total = torch.cuda.mem_get_info(dev)
    capacity = free + torch.cuda.memory_reserved(dev)
    limit = task["max_batch_limit"]
    guess = measure.predict_max_batch(mem_points, int(0.97 * capacity))
    start = min(max(8, guess or 8), limit)
    mb = measure.max_batch_size(model, image_size, device=dev, mode="infer", precision=prec,
                                channels_last=cl, start=start, limit=limit,
                                tol=task["max_batch_tol"], growth=1.125 if guess else 2.0)
    return {"max_batch_size": mb, "max_batch_at_limit": mb == limit,
            "max_batch_guess": guess}


def worker_mfu(task: dict[str, Any]) -> None:
    """Training throughput and MFU of one model (bf16, fused AdamW, compile on CUDA)."""
    dev, prec, prov = worker_env(task)
    s, bs = task["image_size"], task["batch_size"]
    cfg = model_cfg(task["key"], task["patch"], s)
    conf = point_config("mfu", cfg, image_size=s, batch_size=bs, precision=prec,
                        device=task["device"], compile=task["compile"], channels_last=False,
                        quick=task["quick"])

    def point(m: dict[str, Any]) -> tuple[str, str | None]:
        from benchbench import measure

        model = build(cfg, s, dev)
        m["params"] = measure.count_params(model)
        m.update(measure.count_flops(model, s))
        r = measure.train_throughput(model, batch_size=bs, image_size=s, num_classes=1000,
                                     device=dev, precision=prec, compile=task["compile"],
                                     warmup=task["warmup"], repeats=task["repeats"])
        m.update({k: r[k] for k in ("train_img_per_s", "train_img_per_s_spread", "batch_size",
                                    "peak_mem_train_bytes", "train_warmup_s")})
        m["peak_mem_bytes"] = r["peak_mem_train_bytes"]
        m["peak_flops"] = task.get("peak_flops")
        m["mfu"] = measure.mfu(m["flops_per_image"], m["train_img_per_s"], m["peak_flops"])
        return r["status"], r["error"]

    row = run_point("mfu", conf, point, out=task["out"], provenance=prov, device=dev,
                    batch_size=bs)
    say(f"mfu {row['model']}: {row['status']} {fmt(row.get('train_img_per_s'))} img/s, "
        f"MFU {fmt(row.get('mfu'))}")
