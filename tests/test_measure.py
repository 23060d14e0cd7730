"""Timing, throughput, memory, max batch, MFU and measure_model on the CPU (fake clocks and
fake OOMs stand in for the GPU), plus GPU-only checks and the gpu_bench script's CPU parts."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchbench import gpu_bench, measure, results
from benchbench.measure import (
    Clock,
    infer_throughput,
    max_batch_size,
    measure_model,
    mfu,
    peak_flops_from_table,
    time_fn,
    train_throughput,
)
from benchbench.models import build_model, count_params

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


# --- time_fn ---------------------------------------------------------------------------------

def test_time_fn_median_spread_and_warmup_not_timed():
    fake = FakeClock()
    durations = iter([100.0, 100.0, 1.0, 2.0, 3.0, 4.0, 10.0])  # 2 warm-up calls, then 5
    calls = []

    def fn():
        calls.append(1)
        fake.advance(next(durations))

    t = time_fn(fn, warmup=2, repeats=5, iters_per_repeat=1, clock=Clock(now=fake.now))
    assert len(calls) == 7
    assert t["times_s"] == [1.0, 2.0, 3.0, 4.0, 10.0]  # the 100 s warm-ups are not in them
    assert t["median_s"] == 3.0
    assert t["spread_s"] == 4.0 - 2.0  # IQR: q75 - q25 (linear interpolation)
    assert (t["min_s"], t["max_s"], t["warmup_s"]) == (1.0, 10.0, 200.0)


def test_time_fn_iters_per_repeat_and_sync_before_each_reading():
    fake = FakeClock()
    durations = iter([5.0, 1.0, 3.0, 2.0, 2.0, 4.0, 6.0])
    syncs = []
    t = time_fn(lambda: fake.advance(next(durations)), warmup=1, repeats=3, iters_per_repeat=2,
                clock=Clock(now=fake.now, sync=lambda: syncs.append(1)))
    assert t["times_s"] == [2.0, 2.0, 5.0]  # per call: (1+3)/2, (2+2)/2, (4+6)/2
    assert t["median_s"] == 2.0
    assert len(syncs) == 2 * (1 + 3)  # start and stop of the warm-up and of each repeat
    with pytest.raises(ValueError):
        time_fn(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="not both"):
        time_fn(lambda: None, sync=lambda: None, clock=Clock())


# --- throughput ------------------------------------------------------------------------------

class Spy(nn.Module):
    """Records its inputs; each call takes `dt` seconds of fake time."""

    def __init__(self, fake: FakeClock | None = None, dt: float = 0.5, num_classes: int = 10):
        super().__init__()
        self.lin = nn.Linear(3, num_classes)
        self.num_classes = num_classes
        self.fake, self.dt = fake, dt
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        if self.fake is not None:
            self.fake.advance(self.dt)
        return self.lin(x.mean((2, 3)))


def test_infer_throughput_uses_fresh_random_inputs_and_fake_clock():
    fake = FakeClock()
    model = Spy(fake, dt=0.5)
    r = infer_throughput(model, batch_size=4, image_size=8, device="cpu", warmup=2, repeats=3,
                         iters_per_repeat=2, clock=Clock(now=fake.now))
    assert r["status"] == "ok" and r["batch_size"] == 4
    assert r["infer_img_per_s"] == pytest.approx(4 / 0.5)
    assert r["infer_img_per_s_spread"] == 0.0 and r["infer_warmup_s"] == pytest.approx(1.0)
    assert r["peak_mem_infer_bytes"] is None  # not measured on a CPU: None, never 0
    assert len(model.seen) == 2 + 3 * 2
    for x in model.seen:
        assert x.shape == (4, 3, 8, 8) and x.abs().sum() > 0 and x.std() > 0.5  # never zeros
    assert not torch.equal(model.seen[0], model.seen[1])  # rotating batches, not one


def test_infer_throughput_real_model_bf16_channels_last():
    torch.manual_seed(0)
    model = build_model({"name": "bit_micro"}, 10, 32)
    r = infer_throughput(model, batch_size=4, image_size=32, precision="bf16",
                         channels_last=True, warmup=1, repeats=2)
    assert r["status"] == "ok" and r["infer_img_per_s"] > 0 and r["infer_iters_per_repeat"] >= 1
    with pytest.raises(ValueError, match="precision"):
        infer_throughput(model, batch_size=4, image_size=32, precision="fp16")
    with pytest.raises(ValueError, match="cuda_graphs"):
        infer_throughput(model, batch_size=4, image_size=32, cuda_graphs=True)


def test_train_throughput_takes_real_optimizer_steps():
    fake = FakeClock()
    model = Spy(fake, dt=0.25)
    before = model.lin.weight.detach().clone()
    r = train_throughput(model, batch_size=8, image_size=4, device="cpu", warmup=1, repeats=2,
                         iters_per_repeat=1, clock=Clock(now=fake.now))
    assert r["status"] == "ok" and r["train_img_per_s"] == pytest.approx(8 / 0.25)
    assert r["peak_mem_train_bytes"] is None
    assert not torch.equal(before, model.lin.weight)  # AdamW stepped
    assert len(model.seen) == 3 and all(x.std() > 0.5 for x in model.seen)


class OOMAbove(nn.Module):
    """Raises the CUDA OOM error for batches larger than `limit` (a fake GPU on the CPU)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.lin = nn.Linear(3, 10)
        self.num_classes = 10
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.lin(x.mean((2, 3)))


@pytest.mark.parametrize("fn", [infer_throughput, train_throughput])
def test_oom_is_a_status_with_the_batch_size_never_a_smaller_batch(fn):
    model = OOMAbove(limit=16)
    r = fn(model, batch_size=64, image_size=4, warmup=1, repeats=2)
    assert r["status"] == "oom" and r["batch_size"] == 64
    assert "batch size 64" in r["error"]
    assert set(model.batches) == {64}  # never retried at another size
    prefix = "infer" if fn is infer_throughput else "train"
    assert r[f"{prefix}_img_per_s"] is None


# --- memory and max batch --------------------------------------------------------------------

def test_peak_memory_is_none_on_cpu_and_runs_fn():
    ran = []
    assert measure.peak_memory(lambda: ran.append(1), "cpu") is None
    assert ran == [1]


@pytest.mark.parametrize("threshold", [1, 2, 3, 100, 777, 1024, 4095])
def test_max_batch_size_finds_the_threshold_in_log_tries(threshold):
    tries = []

    def try_batch(bs: int) -> bool:
        tries.append(bs)
        return bs <= threshold

    assert max_batch_size(try_batch=try_batch, start=1, limit=4096) == threshold
    assert len(tries) <= 2 * math.ceil(math.log2(4096)) + 1
    assert len(set(tries)) == len(tries)  # no size tried twice


def test_max_batch_size_from_a_good_guess_tries_near_the_maximum_only():
    for threshold, start in [(777, 740), (777, 820), (50, 8000)]:
        tries = []

        def try_batch(bs: int, threshold=threshold, tries=tries) -> bool:
            tries.append(bs)
            return bs <= threshold

        got = max_batch_size(try_batch=try_batch, start=start, limit=65536, tol=1 / 16,
                             growth=1.125)
        assert threshold * (1 - 1 / 16) <= got <= threshold, (threshold, start)
        if abs(start - threshold) < 0.1 * threshold:
            assert len(tries) <= 3, tries
    assert measure.predict_max_batch([(100, 1_000), (200, 2_000)], 10_000) == 1000
    assert measure.predict_max_batch([(64, 2_000)], 80_000) is None
    assert measure.predict_max_batch([(64, 2_000), (256, 2_000)], 80_000) is None


def test_max_batch_size_edges_and_tolerance():
    assert max_batch_size(try_batch=lambda bs: False, start=8) is None  # nothing fits
    assert max_batch_size(try_batch=lambda bs: True, start=8, limit=100) == 100  # lower bound
    tries = []

    def try_batch(bs: int) -> bool:
        tries.append(bs)
        return bs <= 777

    got = max_batch_size(try_batch=try_batch, start=1, limit=4096, tol=1 / 16)
    assert 777 * (1 - 1 / 16) <= got <= 777 and len(tries) < 18
    with pytest.raises(ValueError, match="mode"):
        max_batch_size(try_batch=try_batch, mode="eval")
    with pytest.raises(ValueError, match="start"):
        max_batch_size(try_batch=try_batch, start=0)


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_max_batch_size_recovers_from_real_oom_errors(mode):
    model = OOMAbove(limit=37)
    got = max_batch_size(model, 4, device="cpu", mode=mode, precision="fp32", limit=256)
    assert got == 37
    assert max(model.batches) == 64 and len(model.batches) <= 17


# --- MFU and peak FLOP/s -----------------------------------------------------------------------

def test_mfu_formula_and_none():
    assert mfu(2e9, 100.0, 1e12) == pytest.approx(3 * 2e9 * 100 / 1e12)
    assert mfu(None, 100.0, 1e12) is None
    assert mfu(2e9, None, 1e12) is None
    assert mfu(2e9, 100.0, None) is None
    assert measure.peak_bf16_flops("cpu") is None
    assert measure.measure_peak_bf16_flops("cpu") is None


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100 NVL", 835e12), ("NVIDIA H200", 989.4e12), ("NVIDIA GH200 480GB", 989.4e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA L4", 121e12), ("NVIDIA L40S", 362.05e12), ("NVIDIA A10", 125e12),
    ("NVIDIA GeForce RTX 4090", 165.2e12), ("NVIDIA A10G", None), ("Tesla V100-SXM2-16GB", None),
    ("Tesla T4", None),
])
def test_peak_flops_table(name, peak):
    assert peak_flops_from_table(name) == peak


def test_peak_flops_table_cites_a_source_for_every_entry():
    for pattern, flops, source in measure.PEAK_BF16_FLOPS:
        assert flops > 1e13 and "NVIDIA" in source and pattern


def test_peak_flops_cache_is_atomic_and_merges(tmp_path):
    path = tmp_path / "cache" / "peak_flops.json"
    measure._cache_write(path, "GPU A|torch x|n=8192", 1.5e14)
    measure._cache_write(path, "GPU B|torch x|n=8192", 2.5e14)
    assert measure._cache_read(path) == {"GPU A|torch x|n=8192": 1.5e14,
                                         "GPU B|torch x|n=8192": 2.5e14}
    assert [p.name for p in path.parent.iterdir()] == ["peak_flops.json"]  # no temp files
    path.write_text("{not json")
    assert measure._cache_read(path) == {}  # a broken cache is re-measured, not fatal


# --- measure_model -----------------------------------------------------------------------------

GPU_ONLY = ("peak_mem_bytes", "peak_mem_train_bytes", "peak_mem_infer_bytes", "max_batch_size",
            "mfu", "peak_flops")


@pytest.mark.parametrize("cfg", [{"name": "vit_micro", "patch_size": 4}, {"name": "bit_micro"}])
def test_measure_model_on_cpu(cfg):
    torch.manual_seed(0)
    model = build_model(cfg, 10, 32)
    m = measure_model(model, image_size=32, num_classes=10, device="cpu", precision="fp32",
                      batch_size=8, max_batch=True, repeats=2)
    assert set(measure.MEASURE_KEYS) <= set(m)
    assert m["params"] == count_params(model)
    assert m["flops_per_image"] == 2 * m["macs_per_image"] > 0
    assert m["device"] == "cpu" and m["precision"] == "fp32" and m["batch_size"] == 8
    assert m["status"] == "ok" and m["error"] is None
    for k in GPU_ONLY + ("infer_img_per_s", "train_img_per_s"):
        assert m[k] is None, k  # not measured here: null, never made up
    assert set(m) <= set(results.ROW_FIELDS) | set(results.EXTRA_FIELDS)


def test_measure_model_cpu_throughput():
    torch.manual_seed(0)
    model = build_model({"name": "vit_micro", "patch_size": 4}, 10, 32)
    m = measure_model(model, image_size=32, num_classes=10, device="cpu", batch_size=8,
                      repeats=2, warmup=1, cpu_throughput=True, max_batch=True)
    assert m["infer_img_per_s"] > 0 and m["train_img_per_s"] > 0
    assert m["infer_img_per_s_spread"] >= 0 and m["train_img_per_s_spread"] >= 0
    for k in GPU_ONLY:
        assert m[k] is None, k


def test_measure_model_oom_keeps_what_was_measured():
    m = measure_model(OOMAbove(limit=4), image_size=4, num_classes=10, batch_size=16,
                      cpu_throughput=True, repeats=2, warmup=1)
    assert m["status"] == "oom" and "batch size 16" in m["error"] and m["batch_size"] == 16
    # measured before the OOM: the one Linear(3, 10) is 30 multiply-accumulates per image
    assert m["params"] == count_params(OOMAbove(4)) == 40
    assert m["macs_per_image"] == 30 and m["flops_per_image"] == 60


# --- GPU only -----------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_measure_model_fills_gpu_columns():
    torch.manual_seed(0)
    model = build_model({"name": "vit_micro", "patch_size": 4}, 10, 32)
    m = measure_model(model, image_size=32, num_classes=10, device="cuda", precision="bf16",
                      batch_size=64, max_batch=False, repeats=3)
    assert m["device"].startswith("cuda:")
    assert m["infer_img_per_s"] > 0 and m["train_img_per_s"] > 0
    assert m["peak_mem_infer_bytes"] > 0 and m["peak_mem_train_bytes"] > 0
    assert m["peak_mem_bytes"] == max(m["peak_mem_infer_bytes"], m["peak_mem_train_bytes"])
    if m["peak_flops"] is not None:
        assert 0 < m["mfu"] < 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_peak_memory_cuda_graphs_and_matmul_peak(tmp_path):
    x = torch.empty(0, device="cuda")
    peak = measure.peak_memory(lambda: torch.randn(1024, 1024, device="cuda") @ x.new_ones(
        1024, 1024), "cuda")
    assert peak >= 2 * 1024 * 1024 * 4
    model = build_model({"name": "vit_micro", "patch_size": 4}, 10, 32)
    r = infer_throughput(model, batch_size=32, image_size=32, device="cuda", precision="bf16",
                         cuda_graphs=True, repeats=3)
    assert r["status"] == "ok" and r["infer_img_per_s"] > 0
    measured = measure.measure_peak_bf16_flops("cuda", n=4096, repeats=3,
                                               cache_path=tmp_path / "p.json")
    table = peak_flops_from_table(torch.cuda.get_device_name())
    if table:
        assert 0.2 * table < measured < 1.2 * table
    assert json.loads((tmp_path / "p.json").read_text())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_max_batch_size_real_search():
    model = build_model({"name": "vit_micro", "patch_size": 4}, 10, 32)
    assert max_batch_size(model, 32, device="cuda", limit=512) == 512


# --- gpu_bench: the CPU-testable parts ----------------------------------------------------------

def test_gpu_bench_args_and_plan(tmp_path):
    plan = gpu_bench.plan_from_args(gpu_bench.parse_args(["--out", str(tmp_path)]))
    assert plan.parts == ("fig12", "timm", "mfu", "data", "ddp") and plan.sizes == (64, 128, 224, 384, 512)
    assert sorted(plan.fig12_models, key=str) == sorted(
        [("bit_r50x1", None), ("bit_r50x2", None), ("vit_b", 32), ("vit_l", 32), ("vit_b", 16),
         ("vit_l", 16), ("vit_h", 14), ("bit_r152x4", None)], key=str)
    assert plan.compile and plan.budget_s == 480
    q = gpu_bench.plan_from_args(gpu_bench.parse_args(
        ["--out", str(tmp_path), "--device", "cpu", "--quick", "--parts", "fig12,mfu",
         "--sizes", "32,64"]))
    assert q.quick and not q.compile and q.parts == ("fig12", "mfu") and q.sizes == (32, 64)
    with pytest.raises(SystemExit, match="unknown part"):
        gpu_bench.plan_from_args(gpu_bench.parse_args(["--out", "x", "--parts", "fig13"]))
    with pytest.raises(SystemExit, match="--quick"):
        gpu_bench.plan_from_args(gpu_bench.parse_args(["--out", "x", "--device", "cpu"]))


def test_gpu_bench_vit_h14_pads_at_sizes_14_does_not_divide():
    assert gpu_bench.model_cfg("vit_h", 14, 224) == {"name": "vit_h", "patch_size": 14}
    cfg = gpu_bench.model_cfg("vit_h", 14, 64)
    assert cfg["pad_to_patch"] is True
    with torch.device("meta"):
        model = build_model(cfg, 1000, 64)
    counted = measure.count_flops(model, 64)["flops_per_image"]
    assert counted == measure.analytic_vit_flops(32, 1280, 5120, 14, 70)  # ceil(64/14)=5 -> 70 px


def test_gpu_bench_build_row_and_tables(tmp_path):
    conf = gpu_bench.point_config("fig12", gpu_bench.model_cfg("vit_b", 16, 224), image_size=224,
                                  batch_size=None, precision="bf16", device="cuda",
                                  compile=False, channels_last=False, quick=False)
    row = gpu_bench.build_row("fig12", conf, {"infer_img_per_s": 1234.5, "max_batch_size": 4096,
                                              "flops_per_image": 35127656448, "batch_size": 512})
    assert row["run_id"] == results.run_id_of(conf)
    assert (row["model"], row["family"], row["patch_size"]) == ("ViT-B/16", "vit", 16)
    assert row["task"] == "measure" and row["status"] == "ok" and row["study"] == "gpu_bench_fig12"
    assert set(results.ROW_FIELDS) <= set(row)
    results.write_row(row, tmp_path / "fig12")  # the row passes the schema's checks
    failed = gpu_bench.build_row("fig12", conf, {}, status="skipped", error="time budget spent")
    assert failed["status"] == "skipped" and failed["infer_img_per_s"] is None

    csv_path, md_path = gpu_bench.write_rows_table([row], gpu_bench.FIG12_COLUMNS,
                                                   tmp_path / "t", title="T", notes=["a note"])
    lines = csv_path.read_text().splitlines()
    assert lines[0].split(",") == list(gpu_bench.FIG12_COLUMNS) and "1234.5" in lines[1]
    md = md_path.read_text()
    assert md.startswith("# T") and "| ViT-B/16 | 224 | ok | 1234 |" in md and "- a note" in md

    timm_row = dict(row, config={"model": {"name": "timm", "timm_name": "resnet50"}},
                    macs_per_image=4.0e9, infer_img_per_s=3000.0)
    table = gpu_bench.timm_comparison_rows(
        ["resnet50", "vit_base_patch16_224"], [timm_row],
        {"resnet50": {"infer_samples_per_sec": 2000.0, "infer_gmacs": 4.11, "status": "ok"}})
    assert table[0]["ratio_img_per_s"] == pytest.approx(1.5)
    assert table[0]["ratio_gmacs"] == pytest.approx(4.0 / 4.11)
    assert table[1]["status"] == "skipped" and table[1]["ratio_img_per_s"] is None
    assert gpu_bench.timm_comparison_rows(["resnet50"], [timm_row], {})[0][
        "ratio_img_per_s"] is None
    # timm measured at another input size: no ratio, and the table says why
    (odd,) = gpu_bench.timm_comparison_rows(["resnet50"], [timm_row], {"resnet50": {
        "infer_samples_per_sec": 2000.0, "infer_img_size": 288.0, "status": "ok"}})
    assert odd["ratio_img_per_s"] is None and odd["timm_status"] == "input size 288 != benchbench's 224"


def test_timm_side_is_pinned_to_the_train_size():
    # benchmark.py's default is the test size (resnet50: 288); both sides must use 224
    assert gpu_bench.timm_native_size("resnet50") == 224
    assert gpu_bench.timm_native_size("test_vit") == 160
    cmd = gpu_bench.timm_benchmark_cmd("b.py", "resnet50", 256, 224, "cuda:0", Path("r.csv"),
                                       ["--no-retry"], quick=False)
    assert cmd[cmd.index("--img-size") + 1] == "224" and cmd[cmd.index("--device") + 1] == "cuda:0"
    assert "--num-bench-iter" not in cmd and "--no-retry" in cmd


def test_gpu_bench_parse_timm_results(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("model,infer_samples_per_sec,infer_step_time,infer_batch_size,infer_gmacs\n"
                 "resnet50,2950.12,86.7,256,4.11\n")
    r = gpu_bench.parse_timm_results(p)
    assert r["model"] == "resnet50" and r["infer_samples_per_sec"] == 2950.12
    assert r["infer_gmacs"] == 4.11


FAKE_TIMM_BENCHMARK = '''
import argparse, csv
p = argparse.ArgumentParser()
p.add_argument("--bench"); p.add_argument("--amp", action="store_true")
p.add_argument("--amp-dtype"); p.add_argument("-b", type=int); p.add_argument("--model")
p.add_argument("--results-file"); p.add_argument("--no-retry", action="store_true")
p.add_argument("--img-size", type=int); p.add_argument("--device")
p.add_argument("--num-warm-iter", type=int); p.add_argument("--num-bench-iter", type=int)
a = p.parse_args()
assert a.no_retry and a.amp and a.amp_dtype == "bfloat16" and a.bench == "inference"
assert a.img_size == 160 and a.device == "cpu" and a.num_bench_iter >= 5
with open(a.results_file, "w") as f:
    w = csv.writer(f)
    w.writerow(["model", "infer_samples_per_sec", "infer_batch_size", "infer_img_size",
                "infer_gmacs"])
    w.writerow([a.model, 400.0, a.b, a.img_size, 0.04])
'''


def _check_quick_outputs(out: Path) -> None:
    for name in ("env.json", "fig12.csv", "fig12.md", "timm_comparison.csv",
                 "timm_comparison.md", "mfu.csv", "mfu.md"):
        assert (out / name).is_file(), name
    rows, broken = results.load_rows([out / "fig12", out / "timm", out / "mfu"])
    assert not broken and len(rows) == 4
    assert all(r["status"] == "ok" and r["task"] == "measure" for r in rows), rows
    for r in rows:
        assert r["flops_per_image"] > 0 and r["params"] > 0 and r["device"] == "cpu"
        assert r["peak_mem_bytes"] is None and r["mfu"] is None  # CPU: not measured
        assert r["run_id"] == results.run_id_of(r["config"])
    fig = [r for r in rows if r["study"] == "gpu_bench_fig12"]
    assert {r["model"] for r in fig} == {"ViT-micro/4", "R-micro"}
    assert all(r["infer_img_per_s"] > 0 and r["max_batch_size"] is None for r in fig)
    mfu_rows = [r for r in rows if r["study"] == "gpu_bench_mfu"]
    assert mfu_rows[0]["train_img_per_s"] > 0
    timm_md = (out / "timm_comparison.md").read_text()
    assert "| test_vit | 4 | 160 |" in timm_md
    (dp,) = results.load_rows(out / "data")[0]
    assert dp["status"] == "ok" and dp["train_img_per_s"] > 0 and dp["resident_img_per_s"] > 0
    assert dp["data_path_ratio"] == pytest.approx(dp["train_img_per_s"] / dp["resident_img_per_s"])
    assert (out / "data_path.md").is_file()
    (dd,) = results.load_rows(out / "ddp")[0]
    assert dd["status"] == "ok" and dd["ddp_backend"] == "gloo" and dd["batch_size"] == 8
    assert dd["ddp_overhead"] == pytest.approx(1 - dd["ddp_img_per_s"] / dd["plain_img_per_s"])
    assert len(dd["ddp_rounds"]["plain"]) == len(dd["ddp_rounds"]["ddp"]) == 2
    assert "| ViT-micro/4 | 32 | ok | 8 |" in (out / "ddp_overhead.md").read_text()


def test_gpu_bench_quick_cpu_in_process(tmp_path):
    script = tmp_path / "benchmark.py"
    script.write_text(FAKE_TIMM_BENCHMARK)
    out = tmp_path / "out"
    assert gpu_bench.main(["--out", str(out), "--device", "cpu", "--quick", "--in-process",
                           "--timm-benchmark", str(script)]) == 0
    _check_quick_outputs(out)
    assert not torch.distributed.is_initialized() and "WORLD_SIZE" not in os.environ
    table = (out / "timm_comparison.csv").read_text().splitlines()
    assert "400.0" in table[1]  # timm's number made it into the side-by-side


REAL_TIMM_BENCHMARK = Path(os.environ.get("BENCHBENCH_TIMM_BENCHMARK",
                                          Path(__file__).parents[1] / ".third_party/timm/benchmark.py"))


@pytest.mark.slow
@pytest.mark.skipif(not REAL_TIMM_BENCHMARK.is_file(),
                    reason="timm's benchmark.py not fetched (.third_party/timm/benchmark.py)")
def test_gpu_bench_timm_part_with_timms_own_script(tmp_path):
    """The real benchmark.py on the CPU: our flags are ones it accepts, its CSV parses."""
    out = tmp_path / "out"
    assert gpu_bench.main(["--out", str(out), "--device", "cpu", "--quick", "--parts", "timm",
                           "--timm-benchmark", str(REAL_TIMM_BENCHMARK)]) == 0
    (row,) = list(csv.DictReader((out / "timm_comparison.csv").read_text().splitlines()))
    assert row["timm_status"] == "ok" and float(row["timm_img_per_s"]) > 0
    assert float(row["timm_image_size"]) == float(row["image_size"]) == 160
    assert float(row["ratio_img_per_s"]) > 0


@pytest.mark.slow
def test_gpu_bench_tuned_inference_on_cpu(tmp_path):
    """The compile (+ channels_last) arm of the timm table, on the CPU (no CUDA graphs)."""
    task = {"part": "timm", "out": str(tmp_path), "device": "cpu", "timm_name": "resnet18",
            "batch_size": 2, "warmup": 1, "repeats": 2, "quick": True, "tuned": True}
    gpu_bench.worker_timm(task)
    (row,) = results.load_rows(tmp_path / "timm")[0]
    assert row["status"] == "ok" and row["tuned_error"] is None, row["tuned_error"]
    assert row["tuned_img_per_s"] > 0 and row["tuned_channels_last"] is True


def test_gpu_bench_spent_budget_leaves_skipped_rows(tmp_path):
    out = tmp_path / "out"
    assert gpu_bench.main(["--out", str(out), "--device", "cpu", "--quick", "--in-process",
                           "--budget-s", "0"]) == 0
    rows, _ = results.load_rows([out / "fig12", out / "mfu", out / "ddp"])
    assert len(rows) == 4 and {r["status"] for r in rows} == {"skipped"}
    assert all(r["error"] == "time budget spent" for r in rows)
    assert "| test_vit |" in (out / "timm_comparison.md").read_text()  # listed, as skipped
    assert (out / "fig12.md").is_file() and (out / "mfu.md").is_file()


@pytest.mark.slow
def test_gpu_bench_quick_cpu_one_process_per_model(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "benchbench.gpu_bench", "--out", str(out),
                        "--device", "cpu", "--quick"], capture_output=True, text=True,
                       env=env, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "all done" in p.stdout
    _check_quick_outputs(out)


@pytest.mark.slow
def test_gpu_bench_ddp_part_compiles_the_ddp_wrapped_model_on_cpu(tmp_path):
    """torch.compile(DDP(model)) through the real training loop (gloo, 1 rank)."""
    task = {"part": "ddp", "out": str(tmp_path), "device": "cpu", "quick": True,
            "key": "vit_micro", "patch": 4, "batch_size": 8, "image_size": 32, "compile": True,
            "steps": 6, "rounds": 1}
    gpu_bench.worker_ddp(task)
    (row,) = results.load_rows(tmp_path / "ddp")[0]
    assert row["status"] == "ok", row["error"]
    assert row["compile"] is True and row["plain_img_per_s"] > 0 and row["ddp_img_per_s"] > 0
    assert not torch.distributed.is_initialized()
