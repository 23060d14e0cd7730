"""The timm side of gpu_bench: timm's benchmark.py command, its results, and the comparison.

Both sides run the model at its train-time input size, bf16, NCHW, one model per process;
`worker_timm` is benchbench's side (eager, plus a tuned arm), the table puts them together.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchbench.gpu_bench.plan import say
from benchbench.gpu_bench.rows import fmt, point_config, ratio, run_point
from benchbench.gpu_bench.workers import worker_env

TIMM_COLUMNS = ("model", "batch_size", "image_size", "benchbench_img_per_s",
                "benchbench_img_per_s_spread", "timm_img_per_s", "ratio_img_per_s",
                "tuned_img_per_s", "ratio_tuned", "benchbench_gmacs", "timm_gmacs",
                "ratio_gmacs", "timm_image_size", "status", "timm_status")


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


def worker_timm(task: dict[str, Any]) -> None:
    """benchbench's infer_throughput on one timm model (the side of the table that is ours)."""
    dev, prec, prov = worker_env(task)
    cfg = {"name": "timm", "timm_name": task["timm_name"]}
    try:
        s, lookup_error = timm_native_size(task["timm_name"]), None  # timm is pinned to it too
    except Exception as e:  # noqa: BLE001 - still one row (at 224), failed with this error
        s, lookup_error = 224, e
    conf = point_config("timm", cfg, image_size=s, batch_size=task["batch_size"],
                        precision=prec, device=task["device"], compile=False,
                        channels_last=False, quick=task["quick"])

    def point(m: dict[str, Any]) -> tuple[str, str | None]:
        from benchbench import measure, models

        if lookup_error is not None:
            raise lookup_error
        model = models.build_model(cfg, 1000, s, 3)
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
        return r["status"], r["error"]

    row = run_point("timm", conf, point, out=task["out"], provenance=prov, device=dev,
                    batch_size=task["batch_size"])
    say(f"timm {task['timm_name']}: {row['status']} {fmt(row.get('infer_img_per_s'))} img/s")


def _tuned_infer(model, image_size: int, dev, prec: str, task: dict[str, Any]) -> dict[str, Any]:
    """The same model and batch with what benchbench adds over timm's defaults: compile,
    CUDA graphs (on CUDA), channels_last for convolutional models. A failure here is
    recorded beside the eager number, never instead of it."""
    from torch import nn

    from benchbench import measure
    from benchbench.failures import short

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
                "tuned_error": short(e, limit=300)}
