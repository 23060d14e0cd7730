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
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
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


# ------------------------------------------------------------------------------------------
# Rows and tables (pure; CPU-testable)
# ------------------------------------------------------------------------------------------

def model_cfg(key: str, patch: int | None, image_size: int | None = None) -> dict[str, Any]:
    """The model config node of a registry key; pads to the patch when it does not divide
    the image (ViT-H/14 at 64/128/384/512 px: timm's dynamic padding, ceil(s/14)^2 tokens)."""
    cfg: dict[str, Any] = {"name": key}
    if patch is not None:
        cfg["patch_size"] = patch
        if image_size is not None and image_size % patch:
            cfg["pad_to_patch"] = True
    return cfg


def point_config(part: str, model: dict[str, Any], *, image_size: int, batch_size: int | None,
                 precision: str, device: str, compile: bool, channels_last: bool,
                 quick: bool) -> dict[str, Any]:
    """The resolved config of one measured point; its hash is the row's run_id."""
    return {
        "model": model,
        "data": {"image_size": image_size},
        "task": {"name": "measure", "num_classes": 1000, "in_chans": 3},
        "device": device, "precision": precision, "compile": compile,
        "channels_last": channels_last,
        "measure": {"batch_size": batch_size, "bench": f"gpu_bench.{part}", "quick": quick},
        "study": {"name": f"gpu_bench_{part}"},
    }


def fig12_point_config(key: str, patch: int | None, image_size: int, device: str,
                       quick: bool) -> dict[str, Any]:
    """Config of one Figure 12 point (bf16 on CUDA, channels_last for the ResNets)."""
    cuda = device.startswith("cuda")
    return point_config("fig12", model_cfg(key, patch, image_size), image_size=image_size,
                        batch_size=None, precision="bf16" if cuda else "fp32", device=device,
                        compile=False, channels_last=cuda and key.startswith("bit"),
                        quick=quick)


def build_row(part: str, config: dict[str, Any], measured: dict[str, Any], *,
              status: str = "ok", error: str | None = None,
              provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """One benchbench row (results.ROW_FIELDS + extras) for a measured point."""
    from benchbench import models, results

    row = results.empty_row()
    if provenance:
        row.update(provenance)
    m = config["model"]
    family = name = patch = None
    try:
        if m.get("name") != "timm":
            family, name, patch = models.family_of(m), models.paper_name(m), \
                models.patch_size_of(m)
        else:
            family, name = "timm", m.get("timm_name")
    except Exception:  # noqa: BLE001 - a name we cannot decode still gets its row
        name = str(m)
    row.update(
        run_id=results.run_id_of(config), study=config["study"]["name"], task="measure",
        status=status, error=error, family=family, model=name, patch_size=patch,
        image_size=config["data"]["image_size"], num_classes=config["task"]["num_classes"],
        precision=config["precision"], config=config,
    )
    row.update({k: results.sanitize(v) for k, v in measured.items()})
    if status != "ok":
        row["status"] = status
        row["error"] = error or row.get("error")
    return row


def failure_row(part: str, config: dict[str, Any], measured: dict[str, Any], e: BaseException,
                provenance: dict[str, Any]) -> dict[str, Any]:
    """The row of a point whose worker raised: `oom` or `failed`, what was measured before."""
    from benchbench import measure

    return build_row(part, config, measured, status="oom" if measure.is_oom(e) else "failed",
                     error=f"{type(e).__name__}: {e}"[:500], provenance=provenance)


def _bench_train_cfg(batch_size: int, lr: float):
    """The train config the timed training loops use (AdamW, warm-up + cosine, clip 1)."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"optimizer": "adamw", "lr": lr, "weight_decay": 0.05,
                             "betas": [0.9, 0.999], "batch_size": batch_size,
                             "warmup_frac": 0.05, "schedule": "cosine", "grad_clip": 1.0})


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:
            return ""
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def write_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], stem: str | os.PathLike,
                title: str = "", notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """rows -> `<stem>.csv` (raw values) and `<stem>.md` (rounded), same columns."""
    from benchbench.results import atomic_write_text

    stem = Path(stem)
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    atomic_write_text(csv_path, buf.getvalue())
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def timm_comparison_rows(names: Sequence[str], bb_rows: Sequence[dict[str, Any]],
                         timm_results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per timm model: benchbench's row (by timm_name) beside timm
    benchmark.py's result; a model neither side reached has status "skipped"."""
    by_name = {r["config"]["model"].get("timm_name"): r for r in bb_rows}
    out = []
    for name in names:
        r = by_name.get(name, {})
        t = timm_results.get(name, {})
        t_size, size = t.get("infer_img_size"), r.get("image_size")
        if t_size is not None and size is not None and int(t_size) != int(size):
            # never a ratio across input sizes: it would be a comparison of two workloads
            t = dict(t, infer_samples_per_sec=None,
                     status=f"input size {int(t_size)} != benchbench's {size}")
        macs = r.get("macs_per_image")
        bb_gmacs = None if macs is None else macs / 1e9
        out.append({
            "model": name, "batch_size": r.get("batch_size"), "image_size": r.get("image_size"),
            "benchbench_img_per_s": r.get("infer_img_per_s"),
            "benchbench_img_per_s_spread": r.get("infer_img_per_s_spread"),
            "timm_img_per_s": t.get("infer_samples_per_sec"),
            "ratio_img_per_s": ratio(r.get("infer_img_per_s"), t.get("infer_samples_per_sec")),
            "benchbench_gmacs": bb_gmacs, "timm_gmacs": t.get("infer_gmacs"),
            "ratio_gmacs": ratio(bb_gmacs, t.get("infer_gmacs")),
            "timm_image_size": t.get("infer_img_size"),
            "tuned_img_per_s": r.get("tuned_img_per_s"),
            "ratio_tuned": ratio(r.get("tuned_img_per_s"), t.get("infer_samples_per_sec")),
            "status": r.get("status", "skipped"), "timm_status": t.get("status"),
        })
    return out


TIMM_COLUMNS = ("model", "batch_size", "image_size", "benchbench_img_per_s",
                "benchbench_img_per_s_spread", "timm_img_per_s", "ratio_img_per_s",
                "tuned_img_per_s", "ratio_tuned", "benchbench_gmacs", "timm_gmacs",
                "ratio_gmacs", "timm_image_size", "status", "timm_status")
FIG12_COLUMNS = ("model", "image_size", "status", "infer_img_per_s", "infer_img_per_s_spread",
                 "batch_size", "max_batch_size", "max_batch_at_limit", "peak_mem_infer_bytes",
                 "flops_per_image", "infer_mfu", "params", "error")
DATA_COLUMNS = ("model", "image_size", "status", "batch_size", "train_img_per_s",
                "resident_img_per_s", "data_path_ratio", "error")
DDP_COLUMNS = ("model", "image_size", "status", "batch_size", "compile", "plain_img_per_s",
               "ddp_img_per_s", "ddp_overhead", "ddp_backend", "error")
MFU_COLUMNS = ("model", "image_size", "status", "batch_size", "train_img_per_s",
               "train_img_per_s_spread", "mfu", "peak_flops", "peak_mem_train_bytes",
               "train_warmup_s", "flops_per_image", "params", "error")


def parse_timm_results(path: str | os.PathLike) -> dict[str, Any]:
    """The first row of timm benchmark.py's --results-file (csv, or json by extension)."""
    text = Path(path).read_text()
    if str(path).endswith(".json"):
        data = json.loads(text)
        data = data[0] if isinstance(data, list) else data
    else:
        rows = list(csv.DictReader(text.splitlines()))
        if not rows:
            raise ValueError(f"{path}: no result rows")
        data = rows[0]
    out: dict[str, Any] = {}
    for k, v in data.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            out[k] = v
    if "infer_samples_per_sec" not in out and "samples_per_sec" in out:
        out["infer_samples_per_sec"] = out["samples_per_sec"]
    return out


# ------------------------------------------------------------------------------------------
# Workers: one model each (run in a subprocess by default)
# ------------------------------------------------------------------------------------------

def _setup_device(device: str):
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as timm's benchmark.py
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dev


def _precision(dev) -> str:
    return "bf16" if dev.type == "cuda" else "fp32"


def _build(cfg: dict[str, Any], image_size: int, dev):
    import torch

    from benchbench import models

    with torch.device(dev):  # init on the GPU: R152x4's 936M weights init in seconds there
        return models.build_model(cfg, 1000, image_size, 3)


def _provenance(dev) -> dict[str, Any]:
    from benchbench import measure, results

    prov = results.provenance()
    prov["device"] = measure.device_label(dev)
    return prov


def _write(row: dict[str, Any], out: str, part: str) -> None:
    from benchbench import results

    results.write_row(row, Path(out) / part)


def worker_fig12(task: dict[str, Any]) -> None:
    """All sizes of one Figure 12 model: best img/s over batch sizes, max batch, memory."""
    from benchbench import measure

    dev = _setup_device(task["device"])
    prec = _precision(dev)
    prov = _provenance(dev)
    peak = task.get("peak_flops")
    key, patch = task["key"], task["patch"]
    for s in task["sizes"]:
        conf = fig12_point_config(key, patch, s, task["device"], task["quick"])
        cfg, cl = conf["model"], conf["channels_last"]
        if time.time() > task["deadline"]:
            _write(build_row("fig12", conf, {}, status="skipped", error="time budget spent",
                             provenance=prov), task["out"], "fig12")
            continue
        m: dict[str, Any] = {}
        try:
            model = _build(cfg, s, dev)
            m["params"] = measure.count_params(model)
            m.update(measure.count_flops(model, s))
            by_batch: dict[str, float] = {}
            mem_points: list[tuple[int, int]] = []
            best = None
            for bs in task["batches"]:
                r = measure.infer_throughput(model, batch_size=bs, image_size=s, device=dev,
                                             precision=prec, channels_last=cl,
                                             warmup=task["warmup"], repeats=task["repeats"],
                                             min_repeat_s=0.05)
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
            status = "ok" if best is not None else "oom"
            err = None if best is not None else f"out of memory at batch size {task['batches'][0]}"
            row = build_row("fig12", conf, m, status=status, error=err, provenance=prov)
        except Exception as e:  # noqa: BLE001 - failures are data: one row per point
            st = "oom" if measure.is_oom(e) else "failed"
            row = build_row("fig12", conf, m, status=st, error=f"{type(e).__name__}: {e}"[:500],
                            provenance=prov)
        finally:
            model = None  # noqa: F841 - free this size before the next one
            measure.free_memory(dev)
        _write(row, task["out"], "fig12")
        say(f"fig12 {row['model']} @{s}: {row['status']} "
            f"{_fmt(row.get('infer_img_per_s'))} img/s, max batch {row.get('max_batch_size')}")


def worker_timm(task: dict[str, Any]) -> None:
    """benchbench's infer_throughput on one timm model (the side of the table that is ours)."""
    from benchbench import measure, models

    dev = _setup_device(task["device"])
    prec = _precision(dev)
    prov = _provenance(dev)
    cfg = {"name": "timm", "timm_name": task["timm_name"]}
    m: dict[str, Any] = {}
    conf = None
    try:
        s = timm_native_size(task["timm_name"])  # the size timm's side is pinned to
        model = models.build_model(cfg, 1000, s, 3)
        conf = point_config("timm", cfg, image_size=s, batch_size=task["batch_size"],
                            precision=prec, device=task["device"], compile=False,
                            channels_last=False, quick=task["quick"])
        m["params"] = measure.count_params(model)
        m.update(measure.count_flops(model, s))
        r = measure.infer_throughput(model.to(dev), batch_size=task["batch_size"], image_size=s,
                                     device=dev, precision=prec, warmup=task["warmup"],
                                     repeats=task["repeats"])
        m.update({k: r[k] for k in ("infer_img_per_s", "infer_img_per_s_spread", "batch_size",
                                    "peak_mem_infer_bytes")})
        m["peak_mem_bytes"] = r["peak_mem_infer_bytes"]
        if task.get("tuned") and r["status"] == "ok":
            m.update(_tuned_infer(model, s, dev, prec, task))
        row = build_row("timm", conf, m, status=r["status"], error=r["error"], provenance=prov)
    except Exception as e:  # noqa: BLE001
        conf = conf or point_config("timm", cfg, image_size=224, batch_size=task["batch_size"],
                                    precision=prec, device=task["device"], compile=False,
                                    channels_last=False, quick=task["quick"])
        row = failure_row("timm", conf, m, e, prov)
    _write(row, task["out"], "timm")
    say(f"timm {task['timm_name']}: {row['status']} {_fmt(row.get('infer_img_per_s'))} img/s")


def _tuned_infer(model, image_size: int, dev, prec: str, task: dict[str, Any]) -> dict[str, Any]:
    """The same model and batch with what benchbench adds over timm's defaults: compile,
    CUDA graphs (on CUDA), channels_last for convolutional models. A failure here is
    recorded beside the eager number, never instead of it."""
    from torch import nn

    from benchbench import measure

    cl = any(isinstance(mod, nn.Conv2d) and mod.kernel_size != mod.stride
             for mod in model.modules())  # convolutions beyond a patch embedding
    try:
        r = measure.infer_throughput(model, batch_size=task["batch_size"], image_size=image_size,
                                     device=dev, precision=prec, channels_last=cl, compile=True,
                                     cuda_graphs=dev.type == "cuda", warmup=task["warmup"],
                                     repeats=task["repeats"])
        return {"tuned_img_per_s": r["infer_img_per_s"], "tuned_channels_last": cl,
                "tuned_error": r["error"]}
    except Exception as e:  # noqa: BLE001
        return {"tuned_img_per_s": None, "tuned_channels_last": cl,
                "tuned_error": f"{type(e).__name__}: {e}"[:300]}


def worker_mfu(task: dict[str, Any]) -> None:
    """Training throughput and MFU of one model (bf16, fused AdamW, compile on CUDA)."""
    from benchbench import measure

    dev = _setup_device(task["device"])
    prec = _precision(dev)
    prov = _provenance(dev)
    s, bs = task["image_size"], task["batch_size"]
    cfg = model_cfg(task["key"], task["patch"], s)
    conf = point_config("mfu", cfg, image_size=s, batch_size=bs, precision=prec,
                        device=task["device"], compile=task["compile"], channels_last=False,
                        quick=task["quick"])
    m: dict[str, Any] = {}
    try:
        model = _build(cfg, s, dev)
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
        row = build_row("mfu", conf, m, status=r["status"], error=r["error"], provenance=prov)
    except Exception as e:  # noqa: BLE001
        row = failure_row("mfu", conf, m, e, prov)
    _write(row, task["out"], "mfu")
    say(f"mfu {row['model']}: {row['status']} {_fmt(row.get('train_img_per_s'))} img/s, "
        f"MFU {_fmt(row.get('mfu'))}")


def worker_data(task: dict[str, Any]) -> None:
    """End-to-end training img/s through DeviceLoader (uint8 on the device, augmentation and
    normalisation there) against the same loop fed one batch already on the device."""
    import torch

    from benchbench import data, measure
    from benchbench.train import Budget, train

    dev = _setup_device(task["device"])
    prec = _precision(dev)
    prov = _provenance(dev)
    s, bs = task["image_size"], task["batch_size"]
    cfg = model_cfg(task["key"], task["patch"], s)
    conf = point_config("data", cfg, image_size=s, batch_size=bs, precision=prec,
                        device=task["device"], compile=False, channels_last=False,
                        quick=task["quick"])
    m: dict[str, Any] = {}
    try:
        g = torch.Generator().manual_seed(0)  # random images: never time on zeros
        n = task["n_images"]
        split = data.Split(torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8, generator=g),
                           torch.randint(0, 10, (n,), generator=g))
        loader = data.DeviceLoader(split, batch_size=bs, image_size=s, mean=(0.5,) * 3,
                                   std=(0.25,) * 3, device=dev, augment=True)
        fixed = next(loader.iter_from(0))

        def resident(start: int):
            while True:
                yield fixed

        tcfg = _bench_train_cfg(bs, lr=1e-3)
        rates = {}
        for name, batches in (("loader", loader.iter_from), ("resident", resident)):
            torch.manual_seed(0)
            model = _build(cfg, s, dev)
            r = train(model, batches, tcfg=tcfg, budget=Budget(task["steps"], bs), device=dev,
                      precision=prec, progress=False)
            rates[name] = r.train_img_per_s
            del model
            measure.free_memory(dev)
        m.update(params=None, batch_size=bs, train_img_per_s=rates["loader"],
                 resident_img_per_s=rates["resident"],
                 data_path_ratio=ratio(rates["loader"], rates["resident"]))
        row = build_row("data", conf, m, provenance=prov)
    except Exception as e:  # noqa: BLE001
        row = failure_row("data", conf, m, e, prov)
    _write(row, task["out"], "data")
    say(f"data {row['model']}: {row['status']} loader/resident = {_fmt(row.get('data_path_ratio'))}")


@contextlib.contextmanager
def _one_rank_group(dev):
    """A 1-rank process group (nccl on CUDA, gloo on CPU), as `torchrun --nproc-per-node 1`
    would give; yields the backend, and leaves no group or environment behind."""
    import socket

    import torch.distributed as dist

    if dist.is_initialized():
        yield str(dist.get_backend())
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0",
           "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kw = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=0, world_size=1, **kw)
        yield backend
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def worker_ddp(task: dict[str, Any]) -> None:
    """benchbench.train.train with the model DDP-wrapped (wrap_ddp, as the CLI does under
    torchrun/submitit) against the same loop unwrapped, on batches already on the device."""
    import statistics

    dev = _setup_device(task["device"])
    prec = _precision(dev)
    prov = _provenance(dev)
    s, bs, comp = task["image_size"], task["batch_size"], task["compile"]
    cfg = model_cfg(task["key"], task["patch"], s)
    conf = point_config("ddp", cfg, image_size=s, batch_size=bs, precision=prec,
                        device=task["device"], compile=comp, channels_last=False,
                        quick=task["quick"])
    m: dict[str, Any] = {"compile": comp}
    try:
        with _one_rank_group(dev) as backend:
            m["ddp_backend"] = backend
            rates = _ddp_rounds(task, cfg, dev, prec)
        plain, ddp = statistics.median(rates["plain"]), statistics.median(rates["ddp"])
        m.update(batch_size=bs, plain_img_per_s=plain, ddp_img_per_s=ddp,
                 train_img_per_s=ddp, ddp_overhead=1.0 - ddp / plain,
                 ddp_rounds={k: [round(v, 2) for v in vs] for k, vs in rates.items()})
        row = build_row("ddp", conf, m, provenance=prov)
    except Exception as e:  # noqa: BLE001
        row = failure_row("ddp", conf, m, e, prov)
    _write(row, task["out"], "ddp")
    say(f"ddp {row['model']}: {row['status']} overhead {_fmt(row.get('ddp_overhead'))}")


def _ddp_rounds(task: dict[str, Any], cfg: dict[str, Any], dev, prec: str) -> dict[str, list]:
    """img/s of each arm per round; arms alternate so drift falls on both."""
    import torch

    from benchbench import distributed, measure
    from benchbench.train import Budget, train

    s, bs, comp = task["image_size"], task["batch_size"], task["compile"]
    g = torch.Generator().manual_seed(0)  # random images: never time on zeros
    xs = [(torch.randn(bs, 3, s, s, generator=g).to(dev),
           torch.randint(0, 1000, (bs,), generator=g).to(dev)) for _ in range(3)]

    def batches(start: int):
        i = start
        while True:
            yield xs[i % len(xs)]
            i += 1

    tcfg = _bench_train_cfg(bs, lr=1e-4)
    rates: dict[str, list[float]] = {"plain": [], "ddp": []}
    for _ in range(task["rounds"]):
        for arm in ("plain", "ddp"):
            torch.manual_seed(0)
            model = _build(cfg, s, dev)
            net = distributed.wrap_ddp(model, dev) if arm == "ddp" else model
            net = torch.compile(net) if comp else net
            r = train(net, batches, tcfg=tcfg, budget=Budget(task["steps"], bs), device=dev,
                      precision=prec, progress=False)
            rates[arm].append(r.train_img_per_s)
            del model, net
            measure.free_memory(dev)
    return rates


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


# ------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------

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
            _write(build_row(part, conf, {}, status=status, error=error[-500:]), plan.out, part)


def _env(plan: Plan) -> dict[str, Any]:
    import torch

    from benchbench import measure, results

    dev = _setup_device(plan.device)
    env: dict[str, Any] = results.provenance()
    env.update(device=measure.device_label(dev), plan=asdict(plan),
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
    write_table(rows, FIG12_COLUMNS, Path(plan.out) / "fig12",
                title="Figure 12: inference speed and largest batch vs input size",
                notes=["infer_img_per_s: best median over batch sizes "
                       f"{list(plan.fig12_batches)}; spread = IQR over repeats",
                       f"max_batch_size: bisected to ~{plan.max_batch_tol:.0%}, capped at "
                       f"{plan.max_batch_limit} (max_batch_at_limit)",
                       "infer_mfu = forward FLOPs x img/s / datasheet bf16 peak"])


def _timm_script_flags(script: str) -> list[str]:
    """`--no-retry` when this benchmark.py has it: a silently decayed batch misleads."""
    try:
        h = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                           timeout=120)
        return ["--no-retry"] if "--no-retry" in h.stdout else []
    except (OSError, subprocess.SubprocessError):
        return []


def timm_native_size(name: str) -> int:
    """The model's train-time input size from its timm pretrained config (224 if none).

    timm's benchmark.py defaults to the *test* size (resnet50: 288), so both sides are
    pinned to this size explicitly: a ratio at two input sizes would be meaningless."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224


def timm_benchmark_cmd(script: str, model: str, batch_size: int, image_size: int, device: str,
                       out_csv: Path, extra_flags: Sequence[str], quick: bool) -> list[str]:
    cmd = [sys.executable, script, "--bench", "inference", "--amp", "--amp-dtype", "bfloat16",
           "-b", str(batch_size), "--model", model, "--img-size", str(image_size),
           "--device", device.split(":")[0] if device.startswith("cpu") else device,
           "--results-file", str(out_csv), *extra_flags]
    if quick:  # its log interval is bench_iter // 5: 5 is the fewest that works
        cmd += ["--num-warm-iter", "2", "--num-bench-iter", "5"]
    return cmd


def run_timm_benchmark(cmd: list[str], out_csv: Path, timeout_s: float) -> dict[str, Any]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": "timm benchmark.py timed out"}
    if p.returncode != 0 or not out_csv.exists():
        return {"status": "failed", "error": (p.stderr or p.stdout)[-500:]}
    try:
        res = parse_timm_results(out_csv)
    except (OSError, ValueError) as e:
        return {"status": "failed", "error": str(e)}
    res["status"] = "ok"
    return res


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
            (Path(plan.out) / "timm" / f"timm_benchmark_{name}.cmd").write_text(
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
    write_table(table, TIMM_COLUMNS, Path(plan.out) / "timm_comparison",
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
    write_table(rows, columns, Path(plan.out) / stem, title=title, notes=notes)


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
    _write(build_row(part, conf, {}, status="skipped", error="time budget spent"),
           plan.out, part)


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
    from benchbench.results import atomic_write_text

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


if __name__ == "__main__":
    raise SystemExit(main())
