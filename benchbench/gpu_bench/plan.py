"""What one gpu_bench call measures: the parts, their models and sizes, the Plan and its flags.

The model lists are the paper's (Figure 12, appendix D.5) and issues 5 and 7's; `--quick`
swaps every list for micro models so the same code paths run on a CPU in seconds.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PARTS = ("fig12", "timm", "mfu", "data", "ddp")
# Paper Figure 12: the models and input sizes of appendix D.5, cheapest first (time a
# model leaves unspent goes to the ones after it; the costly ones come last).
FIG12_MODELS: tuple[tuple[str, int | None], ...] = (
    ("vit_b", 32), ("vit_l", 32), ("bit_r50x1", None), ("vit_b", 16), ("bit_r50x2", None),
    ("vit_l", 16), ("vit_h", 14), ("bit_r152x4", None),
)
FIG12_SIZES = (64, 128, 224, 384, 512)
FIG12_BATCHES = (64, 256)  # peak img/s is the best over these (those that fit)
TIMM_MODELS = ("vit_base_patch16_224", "vit_large_patch16_224", "resnet50",
               "resnetv2_50x1_bit", "vit_base_r50_s16_224")
# (c): batch sizes chosen to fit an 80 GB GPU with AdamW state; an OOM is a row, not a retry.
MFU_MODELS: tuple[tuple[str, int, int], ...] = (("vit_b", 16, 256), ("vit_l", 16, 128))
# (d): a CIFAR-sized set (50k images, 32 px) through the device-resident loader vs the same
# training step on one batch already on the device: the loader must cost < 5% (issue 5).
DATA_MODELS: tuple[tuple[str, int | None, int], ...] = (("vit_s", 4, 256), ("bit_r50x1", None, 256))
DATA_IMAGES, DATA_STEPS = 50_000, 200
# (e): the training loop with the model wrapped in DDP in a 1-rank process group (nccl)
# against the same loop unwrapped; issue 7's target: DDP costs < 3% img/s. Alternating
# arms, DDP_ROUNDS each, so clock/thermal drift falls on both.
DDP_MODELS: tuple[tuple[str, int | None, int], ...] = (("vit_b", 16, 128), ("bit_r50x1", None, 128))
DDP_STEPS, DDP_ROUNDS = 60, 3
# --quick: the same code paths on micro models
QUICK_FIG12_MODELS: tuple[tuple[str, int | None], ...] = (("vit_micro", 4), ("bit_micro", None))
QUICK_SIZES = (32,)
QUICK_TIMM_MODELS = ("test_vit",)
QUICK_MFU_MODELS: tuple[tuple[str, int, int], ...] = (("vit_micro", 4, 8),)
QUICK_DDP_MODELS: tuple[tuple[str, int | None, int], ...] = (("vit_micro", 4, 8),)
QUICK_DATA_MODELS: tuple[tuple[str, int | None, int], ...] = (("vit_micro", 8, 16),)
BUDGET_SHARE = {"fig12": 0.4, "timm": 0.18, "mfu": 0.18, "data": 0.12, "ddp": 0.12}
WORKER_GRACE_S = 60  # process start, imports, CUDA context on top of a worker's own budget


@dataclass
class Plan:
    """What one call measures; built from the command line by plan_from_args."""

    out: str
    device: str = "cuda"
    quick: bool = False
    parts: tuple[str, ...] = PARTS
    budget_s: float = 480.0
    in_process: bool = False
    timm_benchmark: str | None = None
    fig12_models: tuple = FIG12_MODELS
    sizes: tuple[int, ...] = FIG12_SIZES
    fig12_batches: tuple[int, ...] = FIG12_BATCHES
    max_batch_limit: int = 32768
    max_batch_tol: float = 1 / 16  # bisect until the bracket is within ~6%
    timm_models: tuple[str, ...] = TIMM_MODELS
    timm_batch: int = 256
    mfu_models: tuple = MFU_MODELS
    mfu_image_size: int = 224
    compile: bool = True
    repeats: int = 5
    warmup: int = 3
    fig12_repeats: int = 3  # 40 points in a few minutes: fewer repeats than the other parts
    fig12_warmup: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchbench.gpu_bench",
        description="Figure 12, timm side-by-side and MFU rows on one GPU, one model per process.")
    p.add_argument("--out", required=True, help="output folder (rows, tables, env.json)")
    p.add_argument("--timm-benchmark", default=None, metavar="PATH",
                   help="timm's benchmark.py (from a pytorch-image-models checkout)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu with --quick")
    p.add_argument("--quick", action="store_true", help="micro models, seconds: a smoke test")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="wall-clock budget of the whole call, split between parts")
    p.add_argument("--sizes", default=None, help="Figure 12 image sizes, e.g. 224,384")
    p.add_argument("--no-compile", action="store_true", help="MFU rows without torch.compile")
    p.add_argument("--in-process", action="store_true",
                   help="run workers in this process (tests); default: one process per model")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: a JSON task
    return p.parse_args(argv)


def plan_from_args(args: argparse.Namespace) -> Plan:
    parts = tuple(s.strip() for s in args.parts.split(",") if s.strip())
    bad = [s for s in parts if s not in PARTS]
    if bad:
        raise SystemExit(f"gpu_bench: unknown part(s) {bad}; valid: {', '.join(PARTS)}")
    if args.device.startswith("cpu") and not args.quick:
        raise SystemExit("gpu_bench: --device cpu only with --quick (the full set needs a GPU)")
    plan = Plan(out=str(args.out), device=args.device, quick=args.quick, parts=parts,
                budget_s=args.budget_s, in_process=args.in_process,
                timm_benchmark=args.timm_benchmark, compile=not args.no_compile)
    if args.quick:
        plan.fig12_models, plan.sizes = QUICK_FIG12_MODELS, QUICK_SIZES
        plan.fig12_batches, plan.max_batch_limit = (4, 8), 64
        plan.timm_models, plan.timm_batch = QUICK_TIMM_MODELS, 4
        plan.mfu_models, plan.mfu_image_size = QUICK_MFU_MODELS, 32
        plan.compile, plan.repeats, plan.warmup = False, 2, 1
        plan.fig12_repeats, plan.fig12_warmup = 2, 1
    if args.sizes:
        plan.sizes = tuple(int(s) for s in args.sizes.split(","))
    return plan


def say(msg: str) -> None:
    print(f"[gpu_bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
