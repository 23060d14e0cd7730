"""Measurement: params, FLOPs, throughput, peak memory, max batch size, MFU.

Measurement is pure (STYLE habit 5): every function takes a model and shapes and returns a
flat dict (or one number) whose names carry units; printing and row files happen at the edge
(cli.py, gpu_bench). The one exception is the cache of measured peak FLOP/s.

Modules: `flops` (fvcore + attention handles, analytic ViT, training FLOPs), `timing`
(clocks, time_fn, spread), `throughput` (peak memory, inference/training img/s), `batch`
(largest batch), `peak` (GPU peak table, measured peak, MFU), `row` (measure_model).

Conventions (DESIGN.md "Measurement conventions"):
- FLOPs = 2 x MACs, every matmul/conv counted, attention included; norms/elementwise not.
- Time after warm-up with CUDA events (GPU) or perf_counter after synchronize; the median
  over repeats plus the spread (IQR); inputs are fresh random batches, never zeros.
- Peak memory is `torch.cuda.max_memory_allocated` after a reset, per phase; None on CPU.
- A metric that does not apply (MFU on a CPU, memory on a CPU) is None, never 0.
"""
from __future__ import annotations

from benchbench.measure.batch import max_batch_size, predict_max_batch
from benchbench.measure.flops import (
    ELEMENTWISE_OPS,
    MATMUL_HANDLES,
    NORM_OPS,
    TRAIN_FLOPS_PER_FORWARD,
    FlopCountError,
    analytic_vit_flops,
    count_flops,
    train_flops,
)
from benchbench.measure.peak import (
    PEAK_BF16_FLOPS,
    _cache_path,
    _cache_read,
    _cache_write,
    measure_peak_bf16_flops,
    mfu,
    peak_bf16_flops,
    peak_flops_from_table,
)
from benchbench.measure.row import MEASURE_KEYS, measure_model
from benchbench.measure.throughput import infer_throughput, peak_memory, train_throughput
from benchbench.measure.timing import Clock, CudaEventClock, default_clock, spread, time_fn
from benchbench.models import count_params
from benchbench.runtime import PRECISIONS, device_label, free_memory, is_oom

__all__ = [
    "ELEMENTWISE_OPS", "MATMUL_HANDLES", "MEASURE_KEYS", "NORM_OPS", "PEAK_BF16_FLOPS",
    "PRECISIONS", "TRAIN_FLOPS_PER_FORWARD", "Clock", "CudaEventClock", "FlopCountError",
    "_cache_path", "_cache_read", "_cache_write", "analytic_vit_flops", "count_flops",
    "count_params", "default_clock", "device_label", "free_memory", "infer_throughput",
    "is_oom", "max_batch_size", "measure_model", "measure_peak_bf16_flops", "mfu",
    "peak_bf16_flops", "peak_flops_from_table", "peak_memory", "predict_max_batch", "spread",
    "time_fn", "train_flops", "train_throughput",
]
