"""Everything a GPU can tell us, in one call (issues 5, 7): Figure 12, timm side by side, MFU,
the data path, and the cost of DDP.

    python -m benchbench.gpu_bench --out DIR [--timm-benchmark PATH/TO/timm/benchmark.py]

Runs on one CUDA GPU in under 9 minutes (--budget-s, default 480 s plus the overrun of the
point in progress; each part has its share, time a part leaves unspent goes to the next, and a
part that runs out writes "skipped" rows for what it did not reach):
  (a) Figure 12 (paper appendix D.5): R50x1, R50x2, ViT-B/32, ViT-L/32, ViT-B/16, ViT-L/16,
      ViT-H/14, R152x4 at 64/128/224/384/512 px: peak inference img/s (best of a few batch
      sizes), the largest inference batch, peak memory, inference MFU; one benchbench row per
      point in DIR/fig12/runs/, table DIR/fig12.csv and .md.
  (b) timm side by side: vit_base_patch16_224, vit_large_patch16_224, resnet50,
      resnetv2_50x1_bit, vit_base_r50_s16_224 at batch 256 bf16 through timm's benchmark.py
      (when --timm-benchmark is given) and through benchbench's infer_throughput, with the
      ratio: DIR/timm_comparison.csv and .md (rows in DIR/timm/runs/).
  (c) MFU: ViT-B/16 and ViT-L/16 training at 224 px, bf16, fused AdamW, torch.compile:
      DIR/mfu/runs/, DIR/mfu.csv and .md.
  (d) data path: CIFAR-sized training through the device-resident loader vs one batch
      already on the device (target: loader >= 95%): DIR/data_path.csv and .md.
  (e) DDP: the training loop with the model DDP-wrapped in a 1-rank nccl group vs unwrapped,
      ViT-B/16 and R50x1 (target: < 3% slower): DIR/ddp_overhead.csv and .md.
Every model is measured in its own process (one model per process: the allocator state of
one model must not change the next one's numbers). DIR/env.json records versions, the GPU,
its datasheet peak and the measured bf16 matmul peak.

It needs a GPU and is not run in CI; `--device cpu --quick` shrinks every part to micro
models in seconds (tests/test_measure.py runs it).

Modules: `plan` (parts, model lists, flags), `cli` (orchestration, time budget, tables),
`workers` (Figure 12, MFU), `timm_side` (timm's benchmark.py and the comparison),
`training` (data path, DDP), `rows` (point configs, the row builder, the one failure path).
"""
from __future__ import annotations

from benchbench.gpu_bench.cli import WORKERS, main, run_worker
from benchbench.gpu_bench.plan import PARTS, Plan, parse_args, plan_from_args
from benchbench.gpu_bench.rows import (
    DATA_COLUMNS,
    DDP_COLUMNS,
    FIG12_COLUMNS,
    MFU_COLUMNS,
    build_measure_row,
    fig12_point_config,
    model_cfg,
    point_config,
    run_point,
    write_rows_table,
)
from benchbench.gpu_bench.timm_side import (
    TIMM_COLUMNS,
    parse_timm_results,
    timm_benchmark_cmd,
    timm_comparison_rows,
    timm_native_size,
    worker_timm,
)
from benchbench.gpu_bench.training import worker_data, worker_ddp
from benchbench.gpu_bench.workers import worker_fig12, worker_mfu

build_row = build_measure_row  # the name before the split

__all__ = [
    "DATA_COLUMNS", "DDP_COLUMNS", "FIG12_COLUMNS", "MFU_COLUMNS", "PARTS", "TIMM_COLUMNS",
    "WORKERS", "Plan", "build_measure_row", "build_row", "fig12_point_config", "main",
    "model_cfg", "parse_args", "parse_timm_results", "plan_from_args", "point_config",
    "run_point", "run_worker", "timm_benchmark_cmd", "timm_comparison_rows", "timm_native_size",
    "worker_data", "worker_ddp", "worker_fig12", "worker_mfu", "worker_timm",
    "write_rows_table",
]
