"""hydra/sweeper=adaptive with real processes (issue 25, item 2): within its budget, its
decisions written before their rows, resumed after a kill, bad input one line each."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import REPO, wait_for

POOL = REPO / "results" / "fashion_mnist_compute"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
# a real training grid of a few seconds a point: two families, four budgets, two seeds
SYNTH = ["-m", "hydra/sweeper=adaptive", "model=vit_micro,bit_micro", "train.steps=4,8,16,32",
         "seed=0,1", "quiet=true", "data.train_size=256", "data.test_size=128",
         "train.batch_size=64", "eval.batch_size=128", "eval.internals=false", "threads=1"]


def cli(*args: str, cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchbench.cli", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, out, err


def jsonl(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def rows_of(rdir: Path) -> dict[str, tuple[dict, Path]]:
    return {p.stem: (json.loads(p.read_text()), p) for p in sorted((rdir / "runs").glob("*.json"))}


def pool_flops() -> float:
    return sum(r["train_flops"] for r, _ in rows_of(POOL).values())


def test_replayed_study_stays_in_budget_and_decides_each_run_before_its_row(tmp_path, capsys):
    """The fashion_mnist_compute grid replayed from its committed rows (no training) with a
    quarter of its compute: every row written was decided first, with a prediction, and
    the rows' train FLOPs stay within the budget."""
    budget = 0.25 * pool_flops()
    rdir = tmp_path / "r"
    args = ["study=fashion_mnist_compute", "hydra/sweeper=adaptive", "task=replay",
            f"replay.pool={POOL}", "study.question=crossover", f"study.budget_flops={budget}",
            f"results.dir={rdir}"]
    code, out, err = finish(cli(*args, cwd=tmp_path))
    assert code == 0, err[-3000:]
    rows = rows_of(rdir)
    decisions = jsonl(rdir / "plan" / "decisions.jsonl")
    assert rows and sum(r["train_flops"] for r, _ in rows.values()) <= budget
    assert len(decisions) == len(rows) == len({d["run_id"] for d in decisions})
    assert {d["run_id"] for d in decisions} == set(rows)
    for d in decisions:
        row, path = rows[d["run_id"]]
        assert row["status"] == "ok" and row["replayed_from"]
        assert d["train_flops"] == d["cost"] == row["train_flops"] and d["cost_unit"] == "flops"
        assert d["question"] == "crossover" and d["band"] == 0.9 and d["why"]
        assert d["predicted_basis"] == "prior" or d["predicted_basis"].startswith("fit on ")
        assert d["family"] == row["family"] and d["seed"] == row["seed"]
        lo, mid, hi = d["predicted_top1_lo"], d["predicted_top1"], d["predicted_top1_hi"]
        assert all(math.isfinite(v) for v in (lo, mid, hi)) and lo <= mid <= hi
        # written before the row (a replayed row keeps the pool's started_at: its file time)
        assert datetime.fromisoformat(d["decided_at"]).timestamp() <= path.stat().st_mtime
    rounds = jsonl(rdir / "plan" / "rounds.jsonl")
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    # benchbench-status says where the sweep stopped and that the points it never chose are
    # not unfinished work
    from benchbench import status

    capsys.readouterr()
    assert status.main(args) == 0
    said = capsys.readouterr().out
    missing = sum(ln.startswith("missing ") for ln in said.splitlines())
    assert f"stopped after round {rounds[-1]['round']}: {rounds[-1]['stop']}" in said
    assert f"{len(decisions)} run(s) decided" in said
    assert f"{missing} missing point(s) were never chosen by the sweep" in said and missing
    assert all(r["grid"] == pytest.approx(pool_flops()) for r in rounds)  # the grid's cost
    assert rounds[-1]["stop"] and all(r["spent"] <= budget for r in rounds)
    assert rounds[-1]["answer"]["question"] == "crossover"
    assert {d["round"] for d in decisions} <= {r["round"] for r in rounds if not r["stop"]}
    (stop,) = [ln for ln in out.splitlines() if "adaptive sweep stopped" in ln]
    assert rounds[-1]["stop"] in stop and "crossover:" in stop
    assert "adaptive round 1:" in out


def test_a_killed_sweep_resumes_its_decisions_and_never_decides_a_run_twice(tmp_path):
    """SIGKILL while the first round trains, then the same command: the decided run that
    has no row is relaunched (not chosen again), and the sweep ends within its budget."""
    rdir = tmp_path / "r"
    cmd = [*SYNTH, "study.question=crossover", "study.batch=2", "study.start=2",
           "study.budget_flops=2e10", f"results.dir={rdir}"]
    first = cli(*cmd, cwd=tmp_path, start_new_session=True)
    try:
        def deciding_and_training():
            """the first round's decisions and a job's claim"""
            return (rdir / "plan" / "decisions.jsonl").is_file() and list(
                rdir.glob("claims/*.json"))

        wait_for(deciding_and_training, timeout=180)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        finish(first, timeout=30)
    decided = [d["run_id"] for d in jsonl(rdir / "plan" / "decisions.jsonl")]
    orphans = set(decided) - set(rows_of(rdir))
    assert orphans  # the kill came before a decided run had its row
    time.sleep(0.1)
    code, out, err = finish(cli(*cmd, cwd=tmp_path))
    assert code == 0, err[-3000:]
    assert "relaunching" in out
    decisions = jsonl(rdir / "plan" / "decisions.jsonl")
    ids = [d["run_id"] for d in decisions]
    assert len(ids) == len(set(ids)) and ids[:len(decided)] == decided
    rows = rows_of(rdir)
    assert set(ids) == set(rows) and all(r["status"] == "ok" for r, _ in rows.values())
    assert sum(d["cost"] for d in decisions) <= 2e10
    assert sum(r["train_flops"] for r, _ in rows.values()) <= 2e10
    assert "adaptive sweep stopped" in out


@pytest.mark.parametrize("args, want", [
    (["study.question=bogus", "study.budget_flops=1e12"],
     "unknown study.question='bogus'; use one of crossover, frontier, extrapolate."),
    (["study.question=crossover"], "hydra/sweeper=adaptive needs exactly one budget: "
     "study.budget_flops=<train FLOPs> or study.budget_device_h=<device-hours>."),
    (["study.question=crossover", "study.budget_flops=1e3"],
     "the budget (1000) is smaller than the cheapest point of the grid"),
])
def test_bad_adaptive_input_is_one_line(tmp_path, args, want):
    rdir = tmp_path / "r"
    code, out, err = finish(cli(*SYNTH, *args, f"results.dir={rdir}", cwd=tmp_path))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("benchbench: error: "), err
    assert want in lines[0] and "Traceback" not in err
    assert not list(rdir.glob("runs/*.json")) and not (rdir / "plan" / "decisions.jsonl").exists()


@pytest.mark.parametrize("sweeper", ["adaptive", "benchbench"])
def test_a_replay_pool_with_no_matching_row_is_one_line_naming_it(tmp_path, sweeper):
    """No point of the grid (synthetic data) has a row in the Fashion-MNIST pool."""
    rdir = tmp_path / "r"
    code, out, err = finish(cli(
        "-m", f"hydra/sweeper={sweeper}", "seed=0,1", "task=replay", f"replay.pool={POOL}",
        "study.question=crossover", "study.budget_flops=1e12", f"results.dir={rdir}",
        cwd=tmp_path))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == (f"benchbench: error: task=replay: no row in replay.pool={POOL} matches "
                        f"any of the 2 points of the grid; point replay.pool at the results dir "
                        f"of a study with these settings (same data, models and budgets).")
    assert not list(rdir.glob("runs/*.json")) and "submitting" not in out


def test_the_study_keys_leave_a_committed_rows_run_id_as_it_is():
    from benchbench import status

    (over, cfg), = status.points([
        "study=fashion_mnist_compute", "model=bit_micro", "model.patch_size=8",
        "train.epochs=2", "train.lr=0.001", "seed=0", "study.question=crossover",
        "study.budget_flops=1e12", "study.targets=[1e11,1e12]", "study.batch=2",
        f"results.dir={POOL}"])
    assert cfg.study.question == "crossover" and cfg.study.batch == 2
    st = status.state_of(cfg)
    assert st["state"] == "ok" and (POOL / "runs" / f"{st['run_id']}.json").is_file()


def test_study_keys_convert_the_device_budget_to_seconds_and_targets_to_log10():
    from omegaconf import OmegaConf

    from benchbench.adaptive.sweep import Study
    from benchbench.errors import ConfigError

    s = Study.of(OmegaConf.create({"question": "frontier", "budget_device_h": 2,
                                   "targets": [1e11, 1e13], "families": ["vit"]}))
    assert (s.budget, s.unit, s.targets, s.families) == (7200.0, "device_s", [11.0, 13.0], ["vit"])
    assert (s.batch, s.start, s.min_gain, s.start_share) == (4, 3, 0.01, 0.5)
    from test_adaptive import pool

    s = Study.of(OmegaConf.create({"question": "frontier", "budget_flops": 1e20,
                                   "start_share": 0.2}))
    assert s.planner(pool(seeds=1)[0]).start_share == 0.2
    with pytest.raises(ConfigError, match="exactly one budget: .*, not both"):
        Study.of(OmegaConf.create({"question": "crossover", "budget_flops": 1e12,
                                   "budget_device_h": 1}))
    with pytest.raises(ConfigError, match=r"study.targets are train FLOPs \(positive numbers\)"):
        Study.of(OmegaConf.create({"question": "frontier", "budget_flops": 1e12,
                                   "targets": [-1]}))


def test_a_study_file_with_a_question_runs_adaptively_under_the_default_sweeper(tmp_path):
    """study=fashion_mnist_adaptive sets study.question and a budget; a study file cannot
    override the sweeper the primary config chose, so hydra/sweeper=benchbench runs the
    adaptive sweep itself (replayed here: no training)."""
    rdir = tmp_path / "r"
    code, out, err = finish(cli("study=fashion_mnist_adaptive", "task=replay",
                                f"replay.pool={POOL}", f"results.dir={rdir}", cwd=tmp_path))
    assert code == 0, err[-3000:]
    assert "adaptive sweep stopped" in out
    rows = rows_of(rdir)
    assert 0 < sum(r["train_flops"] for r, _ in rows.values()) <= 3.1e12  # the study's budget
    assert len(rows) < len(rows_of(POOL))
    assert {d["run_id"] for d in jsonl(rdir / "plan" / "decisions.jsonl")} == set(rows)
