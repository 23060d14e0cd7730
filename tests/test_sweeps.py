"""Real Hydra multiruns on micro models: failure isolation, skip on relaunch, retry, resume
after a signal, submitit_local, and the row the default run writes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY

from benchbench import results


def rows_of(rdir: Path) -> list[dict]:
    rows, broken = results.load_rows(rdir)
    assert not broken
    return rows


def test_single_run_writes_one_complete_row(run_cli, capsys):
    code, rdir = run_cli()
    assert code == 0
    (row,) = rows_of(rdir)
    assert row["status"] == "ok" and row["model"] == "ViT-micro/8" and row["family"] == "vit"
    assert row["dataset"] == "synthetic" and row["train_size"] == 256
    assert row["samples_seen"] == 4 * 64 and row["steps"] == 4
    assert row["train_flops"] == 3 * row["flops_per_image"] * row["samples_seen"]
    assert 0 <= row["top1"] <= 1 and row["top5"] >= row["top1"]
    assert row["device"] == "cpu" and row["precision"] == "fp32"
    assert row["mfu"] is None and row["peak_mem_bytes"] is None  # not measured on a CPU
    assert row["config"]["model"]["name"] == "vit_micro" and row["torch_version"]
    out = capsys.readouterr().out
    assert "[ok] ViT-micro/8" in out and f"runs/{row['run_id']}.json" in out


def test_grid_with_an_impossible_point_keeps_going_and_relaunch_trains_nothing(run_cli, capsys):
    args = ["-m", "model=vit_micro,bit_micro", "model.patch_size=8,7"]
    code, rdir = run_cli(*args)
    rows = {r["model"]: r for r in rows_of(rdir)}
    # vit/4 ok, vit/7 fails (7 does not divide 32), bit at 4 and 7 is one point (no patch)
    assert len(rows) == 3 and code == 1
    assert rows["ViT-micro/8"]["status"] == "ok" and rows["R-micro"]["status"] == "ok"
    bad = rows["ViT-micro/7"]
    assert bad["status"] == "failed" and "valid model.patch_size" in bad["error"]
    out = capsys.readouterr().out
    assert "sweep done: 4 points: 1 failed, 2 ok, 1 skipped" in out

    mtimes = {p: p.stat().st_mtime_ns for p in (rdir / "runs").glob("*.json")}
    code, _ = run_cli(*args)
    assert code == 1  # a requested point is not ok (issue 16): the relaunch says so
    out = capsys.readouterr()
    assert "4 points: 4 skipped" in out.out and "study.retry_failed=true" in out.err
    assert {p: p.stat().st_mtime_ns for p in (rdir / "runs").glob("*.json")} == mtimes

    # retry_failed runs the failed point again (it fails again: exit 1, its row rewritten);
    # the ok rows are not touched
    bad_path = rdir / "runs" / f"{bad['run_id']}.json"
    before = bad_path.read_text()
    os.utime(bad_path, ns=(0, 0))  # mtime 1970: any rewrite shows, whatever the clock's grain
    code, _ = run_cli(*args, "study.retry_failed=true")
    assert code == 1
    assert "sweep done: 4 points: 1 failed, 3 skipped" in capsys.readouterr().out
    assert bad_path.stat().st_mtime_ns > 0 and bad_path.read_text() != before
    after = {r["model"]: r for r in rows_of(rdir)}
    assert after["ViT-micro/7"]["status"] == "failed" and after["ViT-micro/7"]["wall_s"] is not None
    assert {p: p.stat().st_mtime_ns for p in (rdir / "runs").glob("*.json") if p != bad_path} == {
        p: t for p, t in mtimes.items() if p != bad_path}  # ok rows: kept as they were


def test_unknown_names_get_one_clear_error_closest_first(run_cli, capsys):
    code, _ = run_cli("model=vit_bb")
    err = capsys.readouterr().err
    assert code == 2 and "unknown model 'vit_bb'. Did you mean 'vit_b'?" in err
    assert "Traceback" not in err
    code, _ = run_cli("study=dmeo")
    assert code == 2 and "Did you mean 'demo'?" in capsys.readouterr().err


def test_single_bad_point_exits_nonzero_with_message_and_failure_row(run_cli, capsys):
    code, rdir = run_cli("model.patch_size=5")
    err = capsys.readouterr().err
    assert code == 2 and "patch size 5 does not divide image size 32" in err
    assert "Traceback" not in err
    (row,) = rows_of(rdir)
    assert row["status"] == "failed"


def _cmd(rdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "benchbench.cli", *TINY, f"results.dir={rdir}", *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# Runs the CLI with training paused at step PAUSE_AT (after a checkpoint) until the test has
# sent its signal: the signal always lands mid-training, however fast the machine.
PAUSED = """
import os, sys, time
from pathlib import Path
from benchbench import cli, train as train_mod

real, flag = train_mod.train, Path(os.environ["BB_PAUSE_FLAG"])

def train(*a, **k):
    def hook(step, loss):
        if step == int(os.environ["BB_PAUSE_AT"]):
            flag.write_text(str(step))
            deadline = time.time() + 120
            while flag.exists() and time.time() < deadline:  # the test deletes it after kill
                time.sleep(0.01)
    return real(*a, **k, on_step=hook)

train_mod.train = train
sys.exit(cli.main(sys.argv[1:]))
"""


def test_killed_run_resumes_from_its_checkpoint_with_the_same_result(tmp_path):
    long = ["train.epochs=12", "train.checkpoint_every_s=0.2", "data.augment=true"]
    ref = tmp_path / "ref"
    subprocess.run(_cmd(ref, *long), check=True, env=_env(), capture_output=True, timeout=300)
    (want,) = rows_of(ref)

    rdir = tmp_path / "killed"
    flag = tmp_path / "paused"
    env = {**_env(), "BB_PAUSE_FLAG": str(flag), "BB_PAUSE_AT": "20"}
    proc = subprocess.Popen([sys.executable, "-c", PAUSED, *_cmd(rdir, *long)[3:]], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not flag.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert flag.read_text() == "20"  # paused inside training, step 20 of 48
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    flag.unlink()  # resume: the loop sees the signal at the next step boundary
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGTERM at step 21; checkpoint" in err and not (rdir / "runs").exists()  # no row
    ckpt_dir = rdir / "ckpt"
    (last,) = ckpt_dir.glob("*/last.pt")
    assert torch.load(last, weights_only=True)["step"] == 21  # mid-training, resumable
    subprocess.run(_cmd(rdir, *long), check=True, env=_env(), capture_output=True, timeout=300)
    (got,) = rows_of(rdir)
    assert got["resumed"] is True and got["status"] == "ok"
    assert got["samples_seen"] == want["samples_seen"] == 12 * 4 * 64
    assert got["top1"] == want["top1"] and got["final_loss"] == pytest.approx(want["final_loss"])
    assert not list(ckpt_dir.glob("*/last.pt"))


def test_submitit_local_launcher_runs_each_point_in_its_own_process(tmp_path):
    rdir = tmp_path / "res"
    r = subprocess.run(
        _cmd(rdir, "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
             "model=vit_micro,bit_micro"),
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = rows_of(rdir)
    assert sorted(x["model"] for x in rows) == ["R-micro", "ViT-micro/8"]
    assert all(x["status"] == "ok" for x in rows)
    assert "2 points: 2 ok" in r.stdout


def test_sweep_status_files_feed_the_summary(tmp_path, run_cli):
    code, rdir = run_cli("-m", "seed=0,1")
    assert code == 0
    status = list((rdir / "logs").glob("sweep-*/status/*.json"))
    assert len(status) == 2 and {json.loads(p.read_text())["status"] for p in status} == {"ok"}


def test_smoke_mode_runs_every_point_of_a_study_for_two_steps(run_cli, capsys):
    """debug=smoke: the demo's 12 points (10 rows) at their real models, data size and
    batch, 2 steps each, in their own results folder and with their own run_ids."""
    code, rdir = run_cli("study=demo", "debug=smoke", "data.test_size=256", tiny=False,
                         results=None)
    assert code == 0 and "12 points: 10 ok, 2 skipped" in capsys.readouterr().out
    rows = rows_of(rdir)
    assert len(rows) == 10 and {r["status"] for r in rows} == {"ok"}
    assert {r["steps"] for r in rows} == {2} and {r["samples_seen"] for r in rows} == {128}
    assert {r["train_size"] for r in rows} == {6000}  # the study's fixed data
    assert {r["config"]["train"]["epochs"] for r in rows} == {3, 10}
    assert all(r["infer_img_per_s"] is None for r in rows)  # smoke: no CPU timing
    assert {r["config"]["max_steps"] for r in rows} == {2}
    committed = {p.stem for p in (REPO / "results" / "demo" / "runs").glob("*.json")
                 if json.loads(p.read_text())["task"] == "train"}
    assert len(committed) == 10 and not committed & {r["run_id"] for r in rows}  # own ids


def test_max_steps_must_be_a_positive_whole_number(run_cli, capsys):
    code, _ = run_cli("max_steps=0")
    assert code == 2 and "max_steps must be a positive whole number or null" in capsys.readouterr().err


def test_module_entry_point_sweep_exits_nonzero_for_a_bad_point(tmp_path):
    """`python -m benchbench.cli -m` (how torchrun starts it): the summary's exit code
    reaches the process (the summary callback and main are one module)."""
    rdir = tmp_path / "res"
    r = subprocess.run(_cmd(rdir, "-m", "task=measure", "model=vit_micro",
                            "model.patch_size=4,5"),
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "2 points: 1 failed, 1 ok" in r.stdout


def test_peak_memory_columns_of_one_process(run_cli, monkeypatch):
    """peak_mem_bytes is the larger of the training and inference peaks; with one process
    peak_mem_sum_bytes (the sum over ranks) is that same value. A CPU measures no memory, so
    the inference timing reports a known peak here."""
    from benchbench import measure

    def timed(model, **kw):
        return {"status": "ok", "infer_img_per_s": 123.0, "infer_img_per_s_spread": 0.0,
                "peak_mem_infer_bytes": 12345}

    monkeypatch.setattr(measure, "infer_throughput", timed)
    code, rdir = run_cli("train.steps=2", "measure.throughput=true")
    (row,) = rows_of(rdir)
    assert code == 0 and row["infer_img_per_s"] == 123.0
    assert row["peak_mem_train_bytes"] is None  # not measured on a CPU
    assert row["peak_mem_bytes"] == row["peak_mem_sum_bytes"] == 12345
    code, rdir = run_cli("train.steps=2", results=rdir.parent / "plain")
    (row,) = rows_of(rdir)
    assert row["peak_mem_bytes"] is None and row["peak_mem_sum_bytes"] is None


@pytest.mark.gpu
def test_peak_memory_columns_on_a_gpu(run_cli):
    code, rdir = run_cli("train.steps=2", "device=cuda")
    (row,) = rows_of(rdir)
    assert code == 0 and row["world_size"] == 1
    assert row["peak_mem_bytes"] == max(row["peak_mem_train_bytes"],
                                        row["peak_mem_infer_bytes"] or 0) > 0
    assert row["peak_mem_sum_bytes"] == row["peak_mem_bytes"]
