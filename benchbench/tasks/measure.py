"""task=measure: params, FLOPs and (on a GPU) speed, memory and largest batch, on random input.

On a GPU it measures in a fresh process by default: allocator state left by an earlier model
changes memory and speed numbers (one model per process, as timm's bulk_runner).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def run(cfg: Any, row: dict[str, Any], *, rdir: Path | None = None, run_id: str | None = None,
        identity: dict[str, Any] | None = None, **_: Any) -> None:  # run_stage: unused
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
    cuda = device.type == "cuda"
    # the CPU times at its own, smaller batch: 256 images of ViT-S/16 at 224 px take minutes
    bs = int(mc.batch_size) if cuda else int(mc.cpu_throughput_batch)
    throughput = mc.throughput == "auto" and cuda or mc.throughput is True
    row.update(num_classes=num_classes, device=runtime.device_label(device),
               precision=precision, batch_size=bs if throughput or cuda else None)
    kw = dict(image_size=image_size, in_chans=in_chans, num_classes=num_classes, device=device,
              precision=precision, batch_size=bs, compile=bool(cfg.compile),
              channels_last=runtime.channels_last(cfg, row["family"], device),
              max_batch=bool(mc.max_batch), repeats=int(mc.repeats))
    columns = set(ROW_FIELDS) | set(EXTRA_FIELDS)
    if cuda:
        m = measure.measure_model(model, cpu_throughput=throughput, **kw)
        row.update({k: v for k, v in m.items() if k in row or k in columns})
        return
    m = measure.measure_model(model, cpu_throughput=False, **kw)  # params and FLOPs: quick
    row.update({k: v for k, v in m.items() if k in row or k in columns})
    say = _say(cfg)
    if not throughput:
        say(f"measure {row.get('model')} at {image_size} px on the CPU: params and FLOPs only; "
            f"speed stays null (measure.throughput=true times it at "
            f"measure.cpu_throughput_batch={bs})")
        return
    _time_on_cpu(model, row, kw, say)


def _time_on_cpu(model: Any, row: dict[str, Any], kw: dict[str, Any], say: Any) -> None:
    """Inference, then training img/s at the CPU batch, one line before and after each phase
    (a big model takes minutes here); memory stays null (measured on CUDA only)."""
    import time

    from benchbench import measure

    bs, reps = kw["batch_size"], kw["repeats"]
    steps = 3 + reps + 1  # warm-up, repeats, calibration (timing.py)
    rate = _cpu_flops_per_s()
    est = steps * bs * row["flops_per_image"] * (1 + 3) / rate
    say(f"measure {row.get('model')} at {kw['image_size']} px on the CPU: params, FLOPs, then "
        f"inference and training img/s at batch {bs} (measure.cpu_throughput_batch), "
        f"{reps} timed repeats each; roughly {_duration(est)} (this CPU does ~"
        f"{rate / 1e9:.0f} GFLOP/s on a matmul); peak memory is measured on CUDA only")
    args = {k: v for k, v in kw.items() if k not in ("max_batch", "num_classes")}
    for name, fn, extra in (("inference", measure.infer_throughput, {}),
                            ("training", measure.train_throughput,
                             {"num_classes": kw["num_classes"]})):
        t0 = time.perf_counter()
        say(f"  timing {name} (batch {bs}) ...")
        ph = fn(model, **args, **extra)
        row.update({k: v for k, v in ph.items()
                    if k in row and k not in ("status", "error", "batch_size")})
        key = "infer_img_per_s" if name == "inference" else "train_img_per_s"
        v = ph.get(key)
        say(f"  {name}: {'-' if v is None else f'{v:.4g}'} img/s "
            f"({time.perf_counter() - t0:.1f} s)")
        if ph["status"] != "ok":
            row.update(status=ph["status"], error=ph["error"])
            return


def _cpu_flops_per_s() -> float:
    """A quick matmul speed test (~0.1 s): the base of the time estimate, never a result."""
    import time

    import torch

    a = torch.randn(256, 256)
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < 0.05:
        a @ a
        n += 1
    return max(2 * 256**3 * n / (time.perf_counter() - t0), 1e8)


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


def _say(cfg: Any):
    from benchbench.distributed import is_main

    def say(msg: str) -> None:
        if is_main():
            print(msg, flush=True)
    return say
