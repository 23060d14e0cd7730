"""One measurement row: params, FLOPs, throughput, peak memory, largest batch and MFU of a model.

What `task=measure` writes (MEASURE_KEYS are the row's columns); what is not measured on
this device is None, never made up.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from benchbench.measure.batch import max_batch_size
from benchbench.measure.flops import count_flops
from benchbench.measure.peak import mfu, peak_bf16_flops
from benchbench.measure.throughput import _check, infer_throughput, train_throughput
from benchbench.models import count_params
from benchbench.runtime import device_label, free_memory

MEASURE_KEYS = (
    "params", "flops_per_image", "macs_per_image", "infer_img_per_s", "infer_img_per_s_spread",
    "train_img_per_s", "train_img_per_s_spread", "peak_mem_bytes", "peak_mem_train_bytes",
    "peak_mem_infer_bytes", "max_batch_size", "mfu", "peak_flops", "batch_size", "device",
    "precision", "status", "error",
)


def measure_model(
    model: nn.Module,
    *,
    image_size: int | Sequence[int],
    in_chans: int = 3,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    batch_size: int = 256,
    compile: bool = False,
    channels_last: bool = False,
    max_batch: bool = False,
    repeats: int = 5,
    warmup: int = 3,
    cpu_throughput: bool = False,
    train: bool = True,
    peak_flops: float | None = None,
) -> dict[str, Any]:
    """Params, FLOPs and (on CUDA, or on a CPU with cpu_throughput=True) inference and
    training throughput, peak memory per phase, the largest inference batch (max_batch, CUDA
    only) and MFU (CUDA + bf16 only), as one flat dict with the row's column names
    (MEASURE_KEYS). What is not measured is None. An OOM at batch_size gives status "oom"
    and an error naming the batch size; the other columns keep what was measured.
    The training phase updates the model's weights (random data)."""
    dev = torch.device(device)
    _check(precision, batch_size)
    out: dict[str, Any] = dict.fromkeys(MEASURE_KEYS)
    out.update(status="ok", batch_size=batch_size, device=device_label(dev), precision=precision,
               params=count_params(model))
    out.update(count_flops(model, image_size, in_chans))
    cuda = dev.type == "cuda"
    if cuda or cpu_throughput:
        kw = dict(batch_size=batch_size, image_size=image_size, in_chans=in_chans, device=dev,
                  precision=precision, channels_last=channels_last, compile=compile,
                  warmup=warmup, repeats=repeats)
        phases = [infer_throughput(model, **kw)]
        if train and phases[0]["status"] == "ok":
            phases.append(train_throughput(model, num_classes=num_classes, **kw))
        for ph in phases:
            out.update({k: v for k, v in ph.items() if k in out and k != "status"})
            if ph["status"] != "ok":
                out.update(status=ph["status"], error=ph["error"])
    mems = [m for m in (out["peak_mem_infer_bytes"], out["peak_mem_train_bytes"]) if m]
    out["peak_mem_bytes"] = max(mems) if mems else None
    if cuda and max_batch:
        free_memory(dev)
        out["max_batch_size"] = max_batch_size(
            model, image_size, in_chans, device=dev, mode="infer", precision=precision,
            channels_last=channels_last, num_classes=num_classes)
    if cuda and precision == "bf16":  # MFU against the bf16 peak only when running bf16
        out["peak_flops"] = peak_flops if peak_flops is not None else peak_bf16_flops(dev)
        out["mfu"] = mfu(out["flops_per_image"], out["train_img_per_s"], out["peak_flops"])
    return out
