"""benchbench-plan: the bill before launch equals the rows after it (issue 25, item 1)."""
from __future__ import annotations

import csv
import tempfile
import time

import pytest

from benchbench import plan, point, results, status

QUIET = ["quiet=true", "eval.internals=false", "eval.batch_size=128"]
# an epochs budget on a file dataset whose validation split is carved out of train
DIGITS = ["data=digits", "data.val_split=0.1", "train.epochs=1", "train.batch_size=64",
          "model=vit_micro", "model.patch_size=4", *QUIET]
# a FLOP budget, a ViT (analytic count) and a CNN (counted on a meta-built copy)
FLOPS = ["-m", "model=vit_micro,bit_micro", "train.flops=2e9", "data.train_size=128",
         "data.test_size=64", "train.batch_size=32", "data.val_split=32", *QUIET]


def _plan(capsys, *args: str) -> tuple[int, list[dict], str, str]:
    out_csv = f"{tempfile.mkdtemp(prefix='bb-plan-')}/plan.csv"  # never in the checkout
    code = plan.main([*args, "--out", out_csv])
    out, err = capsys.readouterr()
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    return code, rows, out, err


def test_planned_train_flops_equal_the_rows_after_the_study_runs(run_cli, capsys, tmp_path):
    rdir = tmp_path / "results"
    grids = [[*DIGITS, f"results.dir={rdir}"], [*FLOPS, f"results.dir={rdir}"]]
    before = []
    for g in grids:
        code, rows, _, _ = _plan(capsys, *g)
        assert code == 0 and all(r["state"] == "missing" and r["will_run"] == "True"
                                 and r["done"] == "False" for r in rows)
        before += rows
    assert len(before) == 3
    for g in grids:
        assert run_cli(*g, tiny=False)[0] == 0
    capsys.readouterr()
    after = [r for g in grids for r in _plan(capsys, *g)[1]]
    rows = {r["run_id"]: r for r in map(results.read_row, results.iter_row_files(rdir))}
    assert [r["run_id"] for r in after] == [r["run_id"] for r in before]
    for p in before:
        row = rows[p["run_id"]]
        assert row["status"] == "ok"
        assert int(p["train_flops"]) == row["train_flops"] > 0, p["overrides"]
        assert int(p["flops_per_image"]) == row["flops_per_image"]
        assert int(p["samples_seen"]) == row["samples_seen"]
        assert int(p["steps"]) == row["steps"]
    digits = rows[before[0]["run_id"]]
    assert digits["val_size"] == 144 and digits["steps"] == digits["train_size"] // 64  # 1442 - 144
    assert all(r["state"] == "ok" and r["will_run"] == "False" and r["done"] == "True"
               for r in after)


def test_plan_expands_the_launch_as_status_does():
    args = ["-m", "model=vit_micro,bit_micro", "seed=0,1", "train.steps=3",
            "study=demo", "data.train_size=64"]
    fast = [results.run_id_of(point.resolved_config(c))
            for _, c in plan.points(args)]
    slow = [status.state_of(c)["run_id"] for _, c in status.points(args)]
    assert fast == slow and len(set(fast)) > 1


@pytest.mark.parametrize("seeds", [100, pytest.param(1000, marks=pytest.mark.slow)])
def test_thousands_of_points_plan_in_seconds_without_building_a_model(monkeypatch, tmp_path,
                                                                      seeds):
    from benchbench import models

    def no_model(*a, **k):
        raise AssertionError("benchbench-plan built a model")

    monkeypatch.setattr(models, "build_model", no_model)
    args = ["-m", f"seed=range(0,{seeds})", "train.lr=0.001,0.002", "train.epochs=3",
            f"results.dir={tmp_path}"]
    t0 = time.perf_counter()
    rows = plan.plan_rows(plan.points(args))
    took = time.perf_counter() - t0
    assert len(rows) == 2 * seeds and len({r["run_id"] for r in rows}) == 2 * seeds
    # synthetic default 5000 images, batch 64: 78 steps an epoch
    assert {r["train_flops"] for r in rows} == {3 * rows[0]["flops_per_image"] * 3 * 78 * 64}
    # ~5 ms a point on a free core (2000 in ~10 s); building a model takes seconds a point
    assert took < 0.25 * len(rows), f"{took:.0f} s for {len(rows)} points"


def test_budget_warns_and_exits_1_when_the_points_to_run_exceed_it(capsys, tmp_path):
    args = ["-m", "model=vit_b", "data.image_size=224", "train.steps=1000,2000",
            f"results.dir={tmp_path}"]
    code, rows, out, err = _plan(capsys, *args, "--budget", "0.001")
    assert code == 1 and "over the budget of 0.001" in err
    assert "device-hours" in out and "dearest 10%" in out
    # ViT-B/16 at 224 px: the paper's 35.13 GFLOPs a forward (Table 6 via test_flops)
    assert int(rows[0]["train_flops"]) == 3 * int(rows[0]["flops_per_image"]) * 1000 * 64
    assert rows[0]["device_s_basis"].startswith("assumed: MFU 0.4 x H100")
    assert _plan(capsys, *args, "--budget", "1000")[0] == 0


def test_device_time_comes_from_measure_rows_when_there_are_some(run_cli, capsys, tmp_path):
    rdir = tmp_path / "results"
    # a real task=measure row, its training throughput timed on this CPU
    assert run_cli("task=measure", "measure.throughput=true", "measure.cpu_throughput_batch=8",
                   "measure.repeats=1", "quiet=true", results=rdir, tiny=False)[0] == 0
    (m,) = [results.read_row(p) for p in results.iter_row_files(rdir)]
    assert m["task"] == "measure" and m["train_img_per_s"]
    code, rows, _, _ = _plan(capsys, "train.steps=5", "train.batch_size=16",
                             f"results.dir={rdir}")
    assert code == 0
    assert rows[0]["device_s_basis"].startswith("measured:")
    assert float(rows[0]["predicted_device_s"]) == pytest.approx(5 * 16 / m["train_img_per_s"],
                                                                 rel=1e-3)
    # no measure row of that size: the assumed MFU, said so
    code, rows, _, _ = _plan(capsys, "train.steps=5", "data.image_size=64",
                             f"results.dir={rdir}", "--device", "A100")
    assert rows[0]["device_s_basis"].startswith("assumed: MFU 0.4 x A100")


@pytest.mark.parametrize("args, match", [
    (["model=vit_xx"], "unknown model 'vit_xx'"),
    (["train.epoch=3"], "unknown key train.epoch"),
    (["--device", "tpu9"], "unknown --device 'tpu9'"),
    (["--budget", "-1"], "--budget is GPU-hours"),
])
def test_bad_input_is_one_line(capsys, args, match):
    assert plan.main(args) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


def test_points_that_are_one_run_are_billed_once(capsys, tmp_path):
    """A patch size swept over a CNN (which has none) gives two points with one run_id: the
    launch computes it once, so the bill counts it once."""
    code, rows, out, _ = _plan(capsys, "-m", "model=bit_micro,vit_micro", "model.patch_size=8,16",
                               "train.steps=3", "data.train_size=64", f"results.dir={tmp_path}")
    assert code == 0 and len(rows) == 4
    runs = {r["run_id"]: float(r["train_flops"]) for r in rows}
    assert len(runs) == 3
    assert "4 points, 3 distinct runs" in out
    assert f"train FLOPs: {sum(runs.values()):.4g} in all" in out


def test_predicted_top1_is_the_sweeps_surrogate_on_the_results_dirs_rows(capsys):
    """Where the rows can say it, each point gets the family frontier's top-1 at its compute
    with a 90% band for one run: the adaptive sweep's own model (benchbench.adaptive), so
    the bill and the sweep's pre-registered predictions agree."""
    import math

    from conftest import REPO

    from benchbench.adaptive.design import Planner, from_rows, predict
    from benchbench.results import load_rows

    pool = REPO / "results" / "fashion_mnist_compute"
    code, rows, _, _ = _plan(capsys, "study=fashion_mnist_compute", "train.epochs=2,6,18")
    assert code == 0
    cands, by_id = from_rows(load_rows(pool)[0])
    post = Planner("frontier", cands, sum(c.cost for c in cands), families=["bit", "vit"]
                   ).posterior(by_id)
    assert any(r["state"] == "missing" for r in rows)
    for r in rows:
        fam = "vit" if r["model"].startswith("ViT") else "bit"
        xs = [c.x for c in cands if c.family == fam]
        inside = min(xs) <= math.log10(float(r["train_flops"])) <= max(xs)
        assert ("inside" if inside else "extrapolated beyond") in r["top1_basis"]
        m, lo, hi = predict(post, fam, math.log10(float(r["train_flops"])))
        assert float(r["predicted_top1"]) == pytest.approx(m, abs=1e-4)
        assert 0 <= float(r["predicted_top1_lo"]) < float(r["predicted_top1"]) \
            < float(r["predicted_top1_hi"]) <= 1
        assert f"{fam} frontier surrogate on 6 run(s)" in r["top1_basis"]


def test_no_rows_no_prediction(capsys, tmp_path):
    code, rows, _, _ = _plan(capsys, "model=vit_micro", "train.steps=3", "data.train_size=64",
                             f"results.dir={tmp_path}")
    assert code == 0 and rows[0]["predicted_top1"] == ""
    assert rows[0]["top1_basis"].startswith("none: no ok task=train rows")
