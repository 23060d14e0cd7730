"""Peak memory and throughput: inference and training images/s at one batch size, OOM as data.

Inputs are fresh random batches, never zeros; peak memory is `max_memory_allocated` after a
reset, per phase (None on a CPU); an OOM at the asked batch size returns status "oom".
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchbench.measure.flops import _size2
from benchbench.measure.timing import Clock, CudaEventClock, default_clock, spread, time_fn
from benchbench.runtime import PRECISIONS, free_memory, is_oom
from benchbench.runtime import autocast as _autocast


class _PeakMemory:
    """Context: reset the peak on entry, read max_memory_allocated on exit (CUDA only)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes: int | None = None

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda" and exc[0] is None:
            torch.cuda.synchronize(self.device)
            self.bytes = int(torch.cuda.max_memory_allocated(self.device))


def peak_memory(fn: Callable[[], Any], device: torch.device | str) -> int | None:
    """Run `fn` once and return the peak bytes allocated on `device` while it ran (weights
    and anything already resident included); None off CUDA, where it is not measured."""
    with _PeakMemory(torch.device(device)) as pm:
        fn()
    return pm.bytes


def _check(precision: str, batch_size: int) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _random_batches(n: int, batch_size: int, in_chans: int, image_size: Any,
                    device: torch.device, channels_last: bool, seed: int) -> list[torch.Tensor]:
    """`n` distinct standard-normal batches on the device (never zeros: zeros can take fast
    paths and hide the real cost), rotated through while timing."""
    h, w = _size2(image_size)
    gen = torch.Generator(device=device).manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [torch.randn(batch_size, in_chans, h, w, device=device, generator=gen)
            .contiguous(memory_format=fmt) for _ in range(n)]


def _prepare(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _auto_iters(fn: Callable[[], Any], clock: Any, min_repeat_s: float) -> int:
    """Calls per timed repeat so one repeat lasts about min_repeat_s (1..100)."""
    t = clock.start()
    fn()
    dt = clock.stop(t)
    return max(1, min(100, math.ceil(min_repeat_s / max(dt, 1e-9))))


def _oom_result(prefix: str, batch_size: int, msg: str) -> dict[str, Any]:
    first = (msg.strip().splitlines() or [""])[0][:200]
    return {
        "status": "oom",
        "error": f"out of memory at batch size {batch_size} ({prefix}): {first}",
        "batch_size": batch_size,
        f"{prefix}_img_per_s": None,
        f"{prefix}_img_per_s_spread": None,
        f"{prefix}_step_s": None,
        f"{prefix}_warmup_s": None,
        f"peak_mem_{prefix}_bytes": None,
    }


def _throughput(prefix: str, step: Callable[[], Any], *, batch_size: int, device: torch.device,
                warmup: int, repeats: int, iters_per_repeat: int | None, clock: Any,
                min_repeat_s: float, extra_bytes: int, mem: _PeakMemory) -> dict[str, Any]:
    clock = clock if clock is not None else default_clock(device)
    t0 = clock.start()
    for _ in range(warmup):  # compilation, autotuning, allocator warm-up: not timed
        step()
    warmup_s = clock.stop(t0)
    if iters_per_repeat is None:
        iters_per_repeat = _auto_iters(step, clock, min_repeat_s)
    with mem:  # the peak of the steady state (the warm-up may hold autotuning buffers)
        t = time_fn(step, warmup=0, repeats=repeats, iters_per_repeat=iters_per_repeat,
                    clock=clock)
    rates = [batch_size / s for s in t["times_s"]]
    peak = None if mem.bytes is None else mem.bytes - extra_bytes
    return {
        "status": "ok",
        "error": None,
        "batch_size": batch_size,
        f"{prefix}_img_per_s": batch_size / t["median_s"],
        f"{prefix}_img_per_s_spread": spread(rates),  # IQR over repeats
        f"{prefix}_step_s": t["median_s"],
        f"{prefix}_warmup_s": warmup_s,
        f"{prefix}_iters_per_repeat": iters_per_repeat,
        f"peak_mem_{prefix}_bytes": peak,
    }


def infer_throughput(
    model: nn.Module,
    *,
    batch_size: int,
    image_size: int | Sequence[int],
    in_chans: int = 3,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    cuda_graphs: bool = False,
    warmup: int = 3,
    repeats: int = 5,
    iters_per_repeat: int | None = None,
    n_inputs: int = 3,
    min_repeat_s: float = 0.1,
    seed: int = 0,
    clock: Clock | CudaEventClock | None = None,
) -> dict[str, Any]:
    """Inference images/s at exactly `batch_size` (never changed: an OOM returns status
    "oom" with the batch size). Moves the model to `device` (channels_last if asked), eval
    mode, torch.inference_mode, bf16 autocast for precision="bf16". `compile` keeps
    compilation in the warm-up; `cuda_graphs` replays a captured graph (with compile:
    mode="reduce-overhead"). iters_per_repeat=None picks it so a repeat lasts min_repeat_s.

    Returns infer_img_per_s (median over repeats), infer_img_per_s_spread (IQR),
    infer_step_s, infer_warmup_s, peak_mem_infer_bytes (CUDA: peak of the timed phase minus
    the extra pre-generated input batches; None on CPU), batch_size, status, error.
    """
    dev = torch.device(device)
    _check(precision, batch_size)
    if cuda_graphs and dev.type != "cuda":
        raise ValueError("cuda_graphs=True needs a CUDA device")
    try:
        model = _prepare(model, dev, channels_last).eval()
        net = model
        if compile:
            net = torch.compile(model, mode="reduce-overhead" if cuda_graphs else None)
        inputs = _random_batches(n_inputs, batch_size, in_chans, image_size, dev,
                                 channels_last, seed)
        extra = (n_inputs - 1) * inputs[0].numel() * inputs[0].element_size()
        mem = _PeakMemory(dev)
        i = [0]

        def nxt() -> torch.Tensor:
            i[0] += 1
            return inputs[i[0] % n_inputs]

        with torch.inference_mode(), _autocast(dev, precision, cache=not cuda_graphs):
            if cuda_graphs and not compile:
                static_x = inputs[0].clone()
                extra += static_x.numel() * static_x.element_size()
                side = torch.cuda.Stream(dev)
                side.wait_stream(torch.cuda.current_stream(dev))
                with torch.cuda.stream(side):
                    for _ in range(3):
                        net(static_x)
                torch.cuda.current_stream(dev).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    net(static_x)

                def step() -> None:
                    static_x.copy_(nxt())  # fresh data each replay
                    graph.replay()
            else:

                def step() -> None:
                    net(nxt())

            return _throughput("infer", step, batch_size=batch_size, device=dev,
                               warmup=warmup, repeats=repeats,
                               iters_per_repeat=iters_per_repeat, clock=clock,
                               min_repeat_s=min_repeat_s, extra_bytes=extra, mem=mem)
    except Exception as e:
        if not is_oom(e):
            raise
        err = str(e)  # keep the text only: the exception's traceback pins the tensors
    free_memory(dev)  # outside the except block, so those tensors are gone
    return _oom_result("infer", batch_size, err)


def _num_classes_of(model: nn.Module, num_classes: int | None) -> int:
    n = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    if not n:
        raise ValueError("train_throughput needs num_classes (the model has no num_classes)")
    return int(n)


def train_throughput(
    model: nn.Module,
    *,
    batch_size: int,
    image_size: int | Sequence[int],
    in_chans: int = 3,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    warmup: int = 3,
    repeats: int = 5,
    iters_per_repeat: int | None = None,
    n_inputs: int = 3,
    min_repeat_s: float = 0.1,
    lr: float = 1e-4,
    seed: int = 0,
    clock: Clock | CudaEventClock | None = None,
) -> dict[str, Any]:
    """Training images/s of full steps (forward, cross-entropy, backward, AdamW step; fused
    AdamW on CUDA) at exactly `batch_size` on fresh random images and labels. The model's
    weights ARE updated (pass a copy to keep them). Returns train_img_per_s,
    train_img_per_s_spread (IQR), train_step_s, train_warmup_s, peak_mem_train_bytes
    (optimizer state included; None on CPU), batch_size, status ("ok" | "oom"), error."""
    dev = torch.device(device)
    _check(precision, batch_size)
    k = _num_classes_of(model, num_classes)
    try:
        model = _prepare(model, dev, channels_last).train()
        net = torch.compile(model) if compile else model
        opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=dev.type == "cuda")
        inputs = _random_batches(n_inputs, batch_size, in_chans, image_size, dev,
                                 channels_last, seed)
        gen = torch.Generator(device=dev).manual_seed(seed + 1)
        labels = [torch.randint(0, k, (batch_size,), device=dev, generator=gen)
                  for _ in range(n_inputs)]
        extra = (n_inputs - 1) * (inputs[0].numel() * inputs[0].element_size()
                                  + labels[0].numel() * labels[0].element_size())
        i = [0]

        def step() -> None:
            i[0] += 1
            x, y = inputs[i[0] % n_inputs], labels[i[0] % n_inputs]
            with _autocast(dev, precision):
                loss = F.cross_entropy(net(x), y)
            loss.backward()  # bf16 autocast needs no loss scaling
            opt.step()
            opt.zero_grad(set_to_none=True)

        return _throughput("train", step, batch_size=batch_size, device=dev, warmup=warmup,
                           repeats=repeats, iters_per_repeat=iters_per_repeat, clock=clock,
                           min_repeat_s=min_repeat_s, extra_bytes=extra, mem=_PeakMemory(dev))
    except Exception as e:
        if not is_oom(e):
            raise
        err = str(e)
    free_memory(dev)
    return _oom_result("train", batch_size, err)
