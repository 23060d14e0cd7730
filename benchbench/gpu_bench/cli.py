"""gpu_bench's command: args -> Plan -> each part's workers (one model per process) -> tables.

Each part gets its share of the time budget (unspent time rolls over to the next); a point
its worker never wrote (died, timed out, not reached) still gets a row, so nothing is dropped.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchbench.gpu_bench.plan import (
    BUDGET_SHARE,
    DATA_IMAGES,
    DATA_MODELS,
    DATA_STEPS,
    DDP_MODELS,
    DDP_ROUNDS,
    DDP_STEPS,
    PARTS,
    QUICK_DATA_MODELS,
    QUICK_DDP_MODELS,
    WORKER_GRACE_S,
    Plan,
    parse_args,
    plan_from_args,
    say,
)
from benchbench.gpu_bench.rows import (
    DATA_COLUMNS,
    DDP_COLUMNS,
    FIG12_COLUMNS,
    MFU_COLUMNS,
    fig12_point_config,
    model_cfg,
    point_config,
    write_rows_table,
    write_status_row,
)
from benchbench.gpu_bench.timm_side import (
    TIMM_COLUMNS,
    _timm_script_flags,
    run_timm_benchmark,
    timm_benchmark_cmd,
    timm_comparison_rows,
    timm_native_size,
    worker_timm,
)
from benchbench.gpu_bench.training import worker_data, worker_ddp
from benchbench.gpu_bench.workers import worker_fig12, worker_mfu
from benchbench.results import atomic_write_text

WORKERS = {"fig12": worker_fig12, "timm": worker_timm, "mfu": worker_mfu, "data": worker_data,
           "ddp": worker_ddp}


def run_worker(task: dict[str, Any], *, in_process: bool, timeout_s: float) -> tuple[int, str]:
    """Run one worker task; returns (exit code, stderr tail). One model per process unless
    in_process (tests)."""
    if in_process:
        WORKERS[task["part"]](task)
        return 0, ""
    cmd = [sys.executable, "-m", "benchbench.gpu_bench", "--out", task["out"],
           "--worker", json.dumps(task)]
    try:
        p = subprocess.run(cmd, stdout=None, stderr=subprocess.PIPE, text=True,
                           timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        return 124, f"worker timed out after {timeout_s:.0f}s"
    return p.returncode, (p.stderr or "")[-2000:]


def _rows(out: str, part: str) -> list[dict[str, Any]]:
    from benchbench import results

    d = Path(out) / part
    if not d.exists():
        return []
    rows, _ = results.load_rows(d)
    return rows


def _fill_missing(plan: Plan, part: str, configs: list[dict[str, Any]], error: str,
                  status: str = "failed") -> None:
    """A worker that died, timed out or never ran still leaves one row per point it owned."""
    from benchbench import results

    for conf in configs:
        rid = results.run_id_of(conf)
        if not results.row_path(Path(plan.out) / part, rid).exists():
            write_status_row(part, conf, plan.out, status=status, error=error[-500:])


def _env(plan: Plan) -> dict[str, Any]:
    import torch

    from benchbench import measure, results, runtime

    dev = torch.device(plan.device)
    runtime.setup_cuda(dev)
    env: dict[str, Any] = results.provenance()
    env.update(device=runtime.device_label(dev), plan=asdict(plan),
               peak_flops_table=None, peak_flops_measured=None, peak_flops=None)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        env["peak_flops_table"] = measure.peak_flops_from_table(name)
        env["peak_flops_measured"] = measure.measure_peak_bf16_flops(dev)
        env["peak_flops"] = env["peak_flops_table"] or env["peak_flops_measured"]
    return env


def run_fig12(plan: Plan, deadline: float, peak: float | None) -> None:
    models = list(plan.fig12_models)
    for i, (key, patch) in enumerate(models):
        share = (deadline - time.time()) / (len(models) - i)  # what is left, split evenly
        task = {"part": "fig12", "out": plan.out, "device": plan.device, "key": key,
                "patch": patch, "sizes": list(plan.sizes), "batches": list(plan.fig12_batches),
                "max_batch_limit": plan.max_batch_limit, "max_batch_tol": plan.max_batch_tol,
                "warmup": plan.fig12_warmup, "repeats": plan.fig12_repeats, "peak_flops": peak,
                "quick": plan.quick, "deadline": time.time() + max(share, 0.0)}
        confs = [fig12_point_config(key, patch, s, plan.device, plan.quick) for s in plan.sizes]
        if share <= 0:
            _fill_missing(plan, "fig12", confs, "time budget spent", status="skipped")
            continue
        say(f"fig12 {key}/{patch}: {len(plan.sizes)} sizes, {share:.0f}s")
        rc, err = run_worker(task, in_process=plan.in_process, timeout_s=share + WORKER_GRACE_S)
        if rc != 0:
            say(f"fig12 {key}/{patch}: worker exit {rc}: {err.strip().splitlines()[-1:]}")
            _fill_missing(plan, "fig12", confs, f"worker exit {rc}: {err}")
    rows = sorted(_rows(plan.out, "fig12"), key=lambda r: (str(r["model"]), r["image_size"]))
    write_rows_table(rows, FIG12_COLUMNS, Path(plan.out) / "fig12",
                     title="Figure 12: inference speed and largest batch vs input size",
                     notes=["infer_img_per_s: best median over batch sizes "
                            f"{list(plan.fig12_batches)}; spread = IQR over repeats",
                            f"max_batch_size: bisected to ~{plan.max_batch_tol:.0%}, capped at "
                            f"{plan.max_batch_limit} (max_batch_at_limit)",
                            "infer_mfu = forward FLOPs x img/s / datasheet bf16 peak"])


def run_timm(plan: Plan, deadline: float) -> None:
    timm_results: dict[str, dict[str, Any]] = {}
    flags = _timm_script_flags(plan.timm_benchmark) if plan.timm_benchmark else []
    for i, name in enumerate(plan.timm_models):
        share = (deadline - time.time()) / (len(plan.timm_models) - i)
        if share <= 0:
            say(f"timm {name}: skipped (time budget spent)")
            continue
        if plan.timm_benchmark:
            say(f"timm benchmark.py {name}")
            csv_path = Path(plan.out) / "timm" / f"timm_benchmark_{name}.csv"
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            cmd = timm_benchmark_cmd(plan.timm_benchmark, name, plan.timm_batch,
                                     timm_native_size(name), plan.device, csv_path, flags,
                                     plan.quick)
            atomic_write_text(Path(plan.out) / "timm" / f"timm_benchmark_{name}.cmd",
                              " ".join(["python", *cmd[1:]]) + "\n")
            timm_results[name] = run_timm_benchmark(cmd, csv_path, share / 2 + WORKER_GRACE_S)
            share = (deadline - time.time()) / (len(plan.timm_models) - i)
        task = {"part": "timm", "out": plan.out, "device": plan.device, "timm_name": name,
                "batch_size": plan.timm_batch, "warmup": plan.warmup, "repeats": plan.repeats,
                "quick": plan.quick, "tuned": plan.compile}
        say(f"timm {name}: benchbench infer_throughput")
        rc, err = run_worker(task, in_process=plan.in_process, timeout_s=share + WORKER_GRACE_S)
        if rc != 0:
            say(f"timm {name}: worker exit {rc}: {err.strip().splitlines()[-1:]}")
    table = timm_comparison_rows(plan.timm_models, _rows(plan.out, "timm"), timm_results)
    notes = ["ratio = benchbench / timm. Both: bf16 autocast, NCHW, batch "
             f"{plan.timm_batch}, cudnn.benchmark, one model per process, the model's "
             "train-time input size (benchmark.py is given --img-size: its default is the "
             "test size, 288 for resnet50).",
             "benchbench: CUDA events, median of repeats over rotating random batches; "
             "timm: mean over its bench iterations on one random batch.",
             "tuned = benchbench with torch.compile + CUDA graphs (+ channels_last for "
             "convolutional models); ratio_tuned = tuned / timm's eager number.",
             "gmacs: benchbench counts matmuls incl. attention, no norms; timm's fvcore "
             "count includes norms (and attention only in newer timm)."]
    if not plan.timm_benchmark:
        notes.append("timm columns empty: run with --timm-benchmark PATH/benchmark.py")
    write_rows_table(table, TIMM_COLUMNS, Path(plan.out) / "timm_comparison",
                     title="benchbench vs timm benchmark.py (inference)", notes=notes)


def _run_points(plan: Plan, part: str, deadline: float, tasks: list[dict[str, Any]],
                columns: Sequence[str], title: str, notes: list[str], stem: str) -> None:
    """Each task in its own worker, sharing the part's time left equally; a point the
    budget did not reach gets a `skipped` row; then the part's table from its rows."""
    for i, task in enumerate(tasks):
        share = (deadline - time.time()) / (len(tasks) - i)
        task = {"part": part, "out": plan.out, "device": plan.device, "quick": plan.quick,
                **task}
        name = f"{part} {task['key']}/{task['patch']} batch {task['batch_size']}"
        if share <= 0:
            _skipped(plan, part, task["key"], task["patch"], task["image_size"],
                     task["batch_size"], task.get("compile", False))
            continue
        say(f"{name}: {share:.0f}s")
        rc, err = run_worker(task, in_process=plan.in_process, timeout_s=share + WORKER_GRACE_S)
        if rc != 0:
            say(f"{name}: worker exit {rc}: {err.strip().splitlines()[-1:]}")
    rows = sorted(_rows(plan.out, part), key=lambda r: str(r["model"]))
    write_rows_table(rows, columns, Path(plan.out) / stem, title=title, notes=notes)


def run_mfu(plan: Plan, deadline: float, peak: float | None) -> None:
    tasks = [{"key": key, "patch": patch, "batch_size": bs, "image_size": plan.mfu_image_size,
              "compile": plan.compile, "warmup": plan.warmup, "repeats": plan.repeats,
              "peak_flops": peak} for key, patch, bs in plan.mfu_models]
    _run_points(plan, "mfu", deadline, tasks, MFU_COLUMNS, "Training throughput and MFU",
                ["mfu = 3 x forward FLOPs x train img/s / datasheet bf16 peak",
                 "train_warmup_s includes torch.compile; it is not in img/s"], stem="mfu")


def _skipped(plan: Plan, part: str, key: str, patch: int | None, image_size: int, bs: int,
             compile: bool) -> None:
    """A row for a point the time budget did not reach (listed, never silently dropped)."""
    conf = point_config(part, model_cfg(key, patch, image_size), image_size=image_size,
                        batch_size=bs,
                        precision="bf16" if plan.device.startswith("cuda") else "fp32",
                        device=plan.device, compile=compile, channels_last=False,
                        quick=plan.quick)
    write_status_row(part, conf, plan.out, status="skipped", error="time budget spent")


def run_data(plan: Plan, deadline: float) -> None:
    tasks = [{"key": key, "patch": patch, "batch_size": bs, "image_size": 32,
              "n_images": 256 if plan.quick else DATA_IMAGES,
              "steps": 12 if plan.quick else DATA_STEPS}
             for key, patch, bs in (QUICK_DATA_MODELS if plan.quick else DATA_MODELS)]
    _run_points(plan, "data", deadline, tasks, DATA_COLUMNS,
                "Training img/s: device-resident loader vs a batch already on the device",
                ["data_path_ratio = loader / resident; the target is >= 0.95",
                 "both through benchbench.train.train (same loop, same warm-up)"],
                stem="data_path")


def run_ddp(plan: Plan, deadline: float) -> None:
    tasks = [{"key": key, "patch": patch, "batch_size": bs,
              "image_size": 32 if plan.quick else 224, "compile": plan.compile,
              "steps": 8 if plan.quick else DDP_STEPS, "rounds": 2 if plan.quick else DDP_ROUNDS}
             for key, patch, bs in (QUICK_DDP_MODELS if plan.quick else DDP_MODELS)]
    _run_points(plan, "ddp", deadline, tasks, DDP_COLUMNS,
                "Training img/s: DDP with 1 rank vs the plain loop",
                ["ddp_overhead = 1 - ddp / plain (medians over alternating rounds); "
                 "the target is < 0.03",
                 "both through benchbench.train.train on batches already on the device; "
                 "DDP as benchbench.distributed.wrap_ddp (SyncBatchNorm on CUDA)"],
                stem="ddp_overhead")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        task = json.loads(args.worker)
        WORKERS[task["part"]](task)
        return 0
    plan = plan_from_args(args)
    if plan.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_bench: no CUDA GPU visible; for a smoke run use "
                             "--device cpu --quick")
    t0 = time.time()
    out = Path(plan.out)
    out.mkdir(parents=True, exist_ok=True)
    env = _env(plan)
    atomic_write_text(out / "env.json", json.dumps(env, indent=1, default=str) + "\n")
    say(f"{env['device']}: torch {env['torch_version']}, timm {env['timm_version']}, "
        f"peak bf16 {env['peak_flops']}, parts {','.join(plan.parts)}, budget {plan.budget_s}s")
    total = sum(BUDGET_SHARE[p] for p in plan.parts)
    spent_share = 0.0
    for part in PARTS:
        if part not in plan.parts:
            continue
        spent_share += BUDGET_SHARE[part] / total
        deadline = t0 + plan.budget_s * spent_share  # unspent time rolls over to later parts
        if part == "fig12":
            run_fig12(plan, deadline, env["peak_flops"])
        elif part == "timm":
            run_timm(plan, deadline)
        elif part == "mfu":
            run_mfu(plan, deadline, env["peak_flops"])
        elif part == "data":
            run_data(plan, deadline)
        else:
            run_ddp(plan, deadline)
        say(f"{part} done at {time.time() - t0:.0f}s")
    say(f"all done in {time.time() - t0:.0f}s: {out}")
    return 0
