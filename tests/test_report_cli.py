"""benchbench-report end to end on synthetic studies written with results.write_row."""
from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchbench.report.cli import main
from benchbench.report.load import load_study
from benchbench.results import run_id_of, write_row

# model -> (family, patch, params, forward FLOPs/img at 32 px, best log10 compute)
TRAIN_MODELS = {
    "ViT-micro/8": ("vit", 8, 0.21e6, 0.9e7, 13.0),
    "ViT-micro/4": ("vit", 4, 0.20e6, 3.4e7, 14.0),
    "ViT-Ti/8": ("vit", 8, 5.4e6, 1.9e8, 15.5),
    "R-micro+ViT-micro/8": ("hybrid", 8, 1.5e6, 5.0e7, 13.8),
    "R-micro": ("bit", None, 1.2e6, 4.0e7, 13.5),
    "R50x1": ("bit", None, 23.5e6, 1.7e8, 15.0),
}
BUDGETS = (1e13, 3e13, 1e14, 3e14, 1e15)
TRAIN_SIZES = (1000, 2000, 5000, 10000, 20000, 50000)
# model -> (family, patch, params, GFLOPs/img at 224 px, img/s at 224 px, max batch at 224 px)
MEASURE_MODELS = {
    "ViT-B/32": ("vit", 32, 88e6, 8.8, 3600, 6000),
    "ViT-B/16": ("vit", 16, 86e6, 35.1, 900, 1500),
    "ViT-L/16": ("vit", 16, 304e6, 123.0, 280, 600),
    "R50x1": ("bit", None, 25.5e6, 8.5, 2600, 1100),
    "R50x2": ("bit", None, 94e6, 32.0, 800, 420),
    "R50+ViT-B/16": ("hybrid", 16, 98e6, 43.0, 700, 900),
}
IMAGE_SIZES = (64, 128, 224, 384, 512)
GPU = "NVIDIA H100 80GB HBM3"


def true_error(family: str, model: str, compute: float, train_size: int) -> float:
    """ViT needs 2x less compute than BiT; hybrids lead at small compute; BiT is better on
    small data; each model has a sweet spot in compute."""
    eff = {"vit": 1.0, "bit": 0.5, "hybrid": 1 + 2 * math.sqrt(1e13 / compute)}[family]
    e = 0.5 * (compute * eff / 1e12) ** -0.25 + 0.05
    e += 0.01 * (math.log10(compute) - TRAIN_MODELS[model][4]) ** 2
    e += {"vit": 0.2, "hybrid": 0.1, "bit": 0.05}[family] * (train_size / 1000) ** -0.6
    return e


def train_row(model: str, budget: float, train_size: int, seed: int, rng, study="synth") -> dict:
    family, patch, params, fpi, _ = TRAIN_MODELS[model]
    batch = 128
    steps = int(budget // (3 * fpi * batch))  # whole steps: train_flops lands just under budget
    samples = steps * batch
    train_flops = 3 * fpi * samples
    acc = 1 - true_error(family, model, budget, train_size) + rng.normal(0, 0.004)
    cfg = {"model": {"name": model}, "data": {"name": "synthetic", "train_size": train_size,
           "image_size": 32}, "train": {"flops": budget, "batch_size": batch},
           "task": {"name": "train"}, "seed": seed}
    return dict(
        run_id=run_id_of(cfg), study=study, status="ok", family=family, model=model,
        patch_size=patch, image_size=32, num_classes=10, params=params, flops_per_image=fpi,
        train_flops=train_flops, samples_seen=samples, dataset="synthetic",
        train_size=train_size, seed=seed, top1=float(np.clip(acc, 0, 1)),
        top5=float(np.clip(acc + 0.15, 0, 1)), infer_img_per_s=2e13 / fpi,
        peak_mem_bytes=int(2e9 + params * 16 + fpi * 10), wall_s=train_flops / 3e13 + 5,
        device=GPU, precision="bf16", task="train", batch_size=batch, steps=steps, config=cfg,
        world_size=1,
    )


def measure_rows(study="synth") -> list[dict]:
    rows = []
    for model, (family, patch, params, gflops, ips, mb) in MEASURE_MODELS.items():
        for s in IMAGE_SIZES:
            scale = (s / 224) ** 2 * (1 + 0.3 * (s / 224) ** 2 * (family != "bit"))
            cfg = {"model": {"name": model}, "data": {"image_size": s}, "task": {"name": "measure"}}
            rows.append(dict(
                run_id=run_id_of(cfg), study=study, status="ok", family=family, model=model,
                patch_size=patch, image_size=s, num_classes=1000, params=params,
                flops_per_image=gflops * 1e9 * scale, infer_img_per_s=ips / scale,
                max_batch_size=int(mb / scale), peak_mem_bytes=int(40e9), device=GPU,
                precision="bf16", task="measure", config=cfg, world_size=1,
            ))
    return rows


def failed_rows(study="synth") -> list[dict]:
    out = []
    for status, err, model in (
        ("failed", "Traceback (most recent call last):\nRuntimeError: loss is NaN at step 40",
         "ViT-Ti/8"),
        ("oom", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "R50x1"),
    ):
        cfg = {"model": {"name": model}, "train": {"flops": 1e16}, "seed": 0, "why": status}
        out.append(dict(run_id=run_id_of(cfg), study=study, status=status, error=err,
                        family=TRAIN_MODELS[model][0], model=model, seed=0, task="train",
                        config=cfg))
    return out


def make_study(root: Path, seeds=(0, 1, 2), measure=True, failed=True, train=True,
               broken=True, study="synth") -> Path:
    """A realistic study: 3 families, 5 compute budgets, 6 dataset sizes, seeds, measure rows
    at 64..512 px, a failed and an oom row, and a broken row file."""
    rng = np.random.default_rng(0)
    rows = []
    if train:
        for model in TRAIN_MODELS:
            for seed in seeds:
                for b in BUDGETS:
                    rows.append(train_row(model, b, TRAIN_SIZES[-1], seed, rng, study))
                for n in TRAIN_SIZES[:-1]:
                    rows.append(train_row(model, 1e14, n, seed, rng, study))
    if measure:
        rows += measure_rows(study)
    if failed:
        rows += failed_rows(study)
    for r in rows:
        write_row(r, root)
    for r in rows[:3] if train else []:  # a few runs have their training curve
        (root / "metrics").mkdir(parents=True, exist_ok=True)
        steps = np.arange(1, 6) * 100
        pd.DataFrame({"step": steps, "samples_seen": steps * 64, "loss": 2.3 / np.sqrt(steps),
                      "val_top1": np.linspace(0.2, 0.6, 5)}).to_csv(
            root / "metrics" / f"{r['run_id']}.csv", index=False)
    if broken:
        (root / "runs").mkdir(parents=True, exist_ok=True)
        (root / "runs" / "deadbeef0000.json").write_text('{"run_id": "deadbeef0000", "sta')
    return root


PLOTS = ("compute_vs_accuracy", "dataset_size_vs_accuracy", "throughput_vs_input_size",
         "patch_size", "time_vs_accuracy", "speed_memory_vs_accuracy", "equal_compute",
         "training_curves")
TABLES = ("equal_compute", "scaling_fits", "frontier", "runs", "failed")


FIGURES: dict = {}  # name -> the matplotlib Figure the full report saved


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    from matplotlib.figure import Figure

    root = make_study(tmp_path_factory.mktemp("study") / "synth")
    real = Figure.savefig

    def savefig(self, fname, *a, **k):  # keep each figure to check what it draws
        FIGURES[Path(fname).stem] = self
        return real(self, fname, *a, **k)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Figure, "savefig", savefig)
        rc = main([str(root), "--n-boot", "200", "--formats", "png,pdf,svg"])
    return root, rc


def test_report_writes_every_plot_and_table(full_report, capsys):
    root, rc = full_report
    assert rc == 0
    out = root / "report"
    for name in PLOTS:
        for ext in ("png", "pdf", "svg"):
            assert (out / f"{name}.{ext}").stat().st_size > 1000, f"{name}.{ext}"
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    md = (out / "report.md").read_text()
    assert md.startswith("# benchbench report: synth")
    assert "benchbench-report" in md and "--n-boot 200" in md  # the command that made it
    assert "2 not ok" in md and "1 broken file" in md
    assert "RuntimeError: loss is NaN at step 40" in md and "**oom**" in md
    assert "deadbeef0000.json" in md
    for name in PLOTS:
        assert f"]({name}.png)" in md
    assert "Not drawn" not in md
    assert "beats" in md and "95% CI" in md and "compute than" in md
    assert "| budget [FLOPs] |" in md  # tables inlined


def test_broken_row_file_is_named_and_kept(full_report):
    root, _ = full_report
    broken = root / "runs" / "deadbeef0000.json"
    assert broken.read_text() == '{"run_id": "deadbeef0000", "sta'
    study = load_study(root)
    assert [p.name for p, _ in study.broken] == ["deadbeef0000.json"]
    assert "not a readable JSON row" in study.broken[0][1]
    assert len(study.df) == len(list((root / "runs").glob("*.json"))) - 1


def test_broken_file_on_stderr(tmp_path, capsys):
    root = make_study(tmp_path / "s", train=False, failed=False)
    assert main([str(root), "--n-boot", "0", "--formats", "png"]) == 0
    err = capsys.readouterr().err
    assert "deadbeef0000.json" in err and "kept" in err


def test_tables_have_units_and_raw_numbers(full_report):
    root, _ = full_report
    runs = pd.read_csv(root / "report" / "runs.csv")
    for col in ("forward [FLOPs/img]", "train compute [FLOPs]", "top-1 [%]",
                "params [M]", "peak memory [GiB]", "inference [img/s]"):
        assert col in runs.columns
    train = runs[runs["task"] == "train"]
    assert len(train) == 6 * 3 * 10 and train["top-1 [%]"].notna().all()
    assert train["top-1 [%]"].between(1, 100).all()  # percent, not fractions
    assert runs.loc[runs["task"] == "measure", "top-1 [%]"].isna().all()  # not measured there
    assert runs["train compute [FLOPs]"].min() > 1e12  # raw FLOPs in the CSV, not PFLOPs
    eq = pd.read_csv(root / "report" / "equal_compute.csv")
    vb = eq[(eq["A"] == "ViT") & (eq["B"] == "BiT")]
    assert len(vb) == 5 and (vb["A - B [pts]"].iloc[:3] > 0).all()  # ViT wins at small budgets
    assert (vb["A - B CI low [pts]"] <= vb["A - B [pts]"]).all()
    fits = pd.read_csv(root / "report" / "scaling_fits.csv")
    assert set(fits["x axis"]) == {"compute", "dataset size"}
    assert {"trustworthy", "reason"} <= set(fits.columns)
    tex = (root / "report" / "equal_compute.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"[\%]" in tex


def test_report_only_failed_rows(tmp_path):
    root = make_study(tmp_path / "f", train=False, measure=False, broken=False)
    assert main([str(root), "--formats", "png"]) == 0
    md = (root / "report" / "report.md").read_text()
    assert "0 ok" in md and "2 not ok" in md
    assert "Not drawn: no measure rows" in md
    assert "Not drawn: no ok train row" in md
    assert "nothing to compare yet" in md
    assert not list((root / "report").glob("*.png"))


def test_report_without_measure_rows_notes_it(tmp_path):
    root = make_study(tmp_path / "m", seeds=(0,), measure=False, failed=False, broken=False)
    out = tmp_path / "elsewhere"
    assert main([str(root), "--out", str(out), "--formats", "png", "--n-boot", "50"]) == 0
    md = (out / "report.md").read_text()
    assert "Not drawn: no measure rows (task=measure)" in md
    assert not (out / "throughput_vs_input_size.png").exists()
    assert (out / "compute_vs_accuracy.png").exists()
    assert "single seed" in md and "no CI" in md  # one seed: says the data cannot tell


def test_several_studies_together(tmp_path):
    a = make_study(tmp_path / "a", seeds=(0,), measure=False, failed=False, broken=False, study="a")
    b = make_study(tmp_path / "b", seeds=(1,), train=True, measure=True, failed=False,
                   broken=False, study="b")
    assert main([str(a), str(b), "--formats", "png", "--n-boot", "20"]) == 0
    md = (a / "report" / "report.md").read_text()
    assert md.startswith("# benchbench report: a, b")


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_dir_exits_2(tmp_path, capsys, make):
    d = tmp_path / "results"
    if make == "empty":
        (d / "runs").mkdir(parents=True)
    assert main([str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("benchbench-report: error:") and str(d) in err


def test_bad_format_exits_2(tmp_path, capsys):
    root = make_study(tmp_path / "s", train=False, failed=False, broken=False)
    assert main([str(root), "--formats", "png,gif"]) == 2
    assert "gif" in capsys.readouterr().err


def test_wandb_missing_is_skipped_cleanly(tmp_path, capsys, monkeypatch):
    root = make_study(tmp_path / "s", train=False, failed=False, broken=False)
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    assert main([str(root), "--formats", "png", "--n-boot", "0", "--wandb"]) == 0
    assert "wandb is not installed" in capsys.readouterr().err


def test_wandb_logs_tables_and_plots(tmp_path, capsys, monkeypatch):
    calls = {}

    class Run:
        def log(self, data):
            calls["log"] = data

        def finish(self):
            calls["finished"] = True

    fake = types.SimpleNamespace(
        init=lambda **kw: calls.setdefault("init", kw) and Run(),
        Table=lambda dataframe: ("table", len(dataframe)),
        Image=lambda path, caption=None: ("image", path),
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    root = make_study(tmp_path / "s", train=False, failed=False, broken=False)
    assert main([str(root), "--formats", "png", "--n-boot", "0", "--wandb"]) == 0
    assert calls["init"]["mode"] == "offline" and calls["finished"]
    assert "table/runs" in calls["log"] and "plot/throughput_vs_input_size" in calls["log"]


def test_unknown_dataset_lists_the_valid_ones(tmp_path, capsys):
    root = make_study(tmp_path / "s", seeds=(0,), measure=False, failed=False, broken=False)
    assert main([str(root), "--dataset", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert "cifar10" in err and "synthetic" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_wandb_offline_for_real(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    root = make_study(tmp_path / "s", train=False, failed=False, broken=False)
    assert main([str(root), "--formats", "png", "--wandb"]) == 0
    assert list((root / "report" / "wandb").glob("offline-run-*/run-*.wandb"))


# ---------------------------------------------------------------- tables and plots vs the rows
def _points_from_rows(rows: list[dict]) -> pd.DataFrame:
    """The seed-averaged points of the ok train rows, computed here from the rows alone."""
    df = pd.DataFrame([r for r in rows if r["status"] == "ok" and r["task"] == "train"])
    g = df.groupby(["model", "train_size", "train_flops"], as_index=False)
    return g.agg(family=("family", "first"), top1=("top1", "mean"), n=("seed", "size"))


def _non_dominated(d: pd.DataFrame) -> set[tuple]:
    """Brute force: no other point with <= compute and >= accuracy, one of them strictly."""
    keep = set()
    for a in d.itertuples():
        beaten = any((b.train_flops <= a.train_flops and b.top1 >= a.top1)
                     and (b.train_flops < a.train_flops or b.top1 > a.top1)
                     for b in d.itertuples() if b.Index != a.Index)
        if not beaten:
            keep.add((a.model, a.train_size, round(a.train_flops / 1e15, 9)))
    return keep


@pytest.fixture(scope="module")
def report_with_figures(full_report):
    """The full report, the rows it was made from, and every figure it saved."""
    from benchbench.results import load_rows

    root, rc = full_report
    assert rc == 0
    rows, broken = load_rows(root)
    assert len(broken) == 1 and len([r for r in rows if r["task"] == "train"]) == 6 * 3 * 10 + 2
    return root, rows, FIGURES


def test_runs_csv_cells_are_the_rows_values(report_with_figures):
    root, rows, _ = report_with_figures
    runs = pd.read_csv(root / "report" / "runs.csv").set_index("run_id")
    assert set(runs.index) == {r["run_id"] for r in rows if r["status"] == "ok"}
    for r in (r for r in rows if r["task"] == "train" and r["status"] == "ok"):
        got = runs.loc[r["run_id"]]
        assert got["top-1 [%]"] == pytest.approx(100 * r["top1"], rel=1e-9)
        assert got["top-5 [%]"] == pytest.approx(100 * r["top5"], rel=1e-9)
        assert got["train compute [FLOPs]"] == pytest.approx(r["train_flops"], rel=1e-9)
        assert got["forward [FLOPs/img]"] == pytest.approx(r["flops_per_image"])
        assert got["params [M]"] == pytest.approx(r["params"] / 1e6)
        assert (got["model"], got["seed"], got["train size [images]"]) == (
            r["model"], r["seed"], r["train_size"])


def test_frontier_csv_is_exactly_the_non_dominated_points(report_with_figures):
    root, rows, _ = report_with_figures
    pts = _points_from_rows(rows)
    front = pd.read_csv(root / "report" / "frontier.csv")
    front = front[front["axis"] == "compute"]
    label = {"vit": "ViT", "bit": "BiT", "hybrid": "Hybrid"}

    def keys(d):
        return {(m, int(n), round(c, 9)) for m, n, c in
                zip(d["model"], d["train size [images]"], d["train compute [FLOPs]"] / 1e15)}

    assert keys(front[front["frontier of"] == "all"]) == _non_dominated(pts)
    for fam, name in label.items():
        assert keys(front[front["frontier of"] == name]) == _non_dominated(pts[pts["family"] == fam])
    acc = {(r.model, r.train_size, round(r.train_flops / 1e15, 9)): 100 * r.top1
           for r in pts.itertuples()}
    for m, n, c, a in zip(front["model"], front["train size [images]"],
                          front["train compute [FLOPs]"] / 1e15, front["top-1 [%]"]):
        assert a == pytest.approx(acc[(m, int(n), round(c, 9))])  # the seed mean, in percent


def test_compute_plot_draws_every_point_and_the_overall_frontier(report_with_figures):
    _, rows, figures = report_with_figures
    pts = _points_from_rows(rows)
    (ax,) = figures["compute_vs_accuracy"].axes
    drawn = set()
    for c in ax.containers:  # one errorbar per family: its data markers
        drawn |= {(round(x, 3), round(y, 9)) for x, y in c.lines[0].get_xydata()}
    want = {(round(c, 3), round(100 * a, 9)) for c, a in zip(pts["train_flops"], pts["top1"])}
    assert drawn == want and len(want) == 6 * 10
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    (overall,) = dashed
    on_front = _non_dominated(pts)
    fr = pts[[(m, n, round(c / 1e15, 9)) in on_front
              for m, n, c in zip(pts["model"], pts["train_size"], pts["train_flops"])]]
    fr = fr.sort_values("train_flops")
    np.testing.assert_allclose(overall.get_xdata(), fr["train_flops"])
    np.testing.assert_allclose(overall.get_ydata(), 100 * fr["top1"])
