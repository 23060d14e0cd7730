"""benchbench-status tells running (a live claim) from interrupted (a checkpoint, no live
claim) from missing, and names rows it cannot trust as broken (issue 23, items 5 and 7):
real training processes, stopped with real signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, wait_for

from benchbench import results, status

# a run far longer than the test: it is always stopped by a signal; a checkpoint every 0.2 s
LONG = [*TINY, "train.steps=100000", "train.log_every=1", "threads=1", "eval.internals=false",
        "train.checkpoint_every_s=0.2"]




def _state(launch: list[str], capsys) -> tuple[str, str]:
    """(the point's status line, the `--only missing,interrupted` output)."""
    assert status.main(launch) == 0
    (line, _total) = capsys.readouterr().out.splitlines()
    assert status.main([*launch, "--only", "missing,interrupted"]) == 0
    return line, capsys.readouterr().out


def _start(rdir: Path, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "benchbench.cli", *LONG, f"results.dir={rdir}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_status_says_running_then_interrupted_after_ctrl_c_and_after_kill_9(tmp_path, capsys):
    rdir = tmp_path / "results"
    launch = [*LONG, f"results.dir={rdir}"]
    ((_, cfg),) = status.points(launch)
    run_id = status.state_of(cfg)["run_id"]
    ckpt = rdir / "ckpt" / run_id / "last.pt"

    def claimed_with_a_checkpoint():
        """the run's claim and its first checkpoint"""
        claim = next(rdir.glob("claims/*.json"), None)
        return claim is not None and ckpt.is_file() and json.loads(claim.read_text())

    line, only = _state(launch, capsys)
    assert line.startswith(f"missing     {run_id}") and only.strip() != ""

    proc = _start(rdir, tmp_path)
    try:
        claim = wait_for(claimed_with_a_checkpoint)
        line, only = _state(launch, capsys)
        assert line.startswith(f"running     {run_id}"), line
        assert f"host {claim['host']}" in line and f"pid {proc.pid}" in line and "at step " in line
        assert only == ""  # running: not to be relaunched
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a checkpoint, no row
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and ckpt.is_file() and not list(rdir.glob("runs/*.json"))
    line, only = _state(launch, capsys)
    assert line.startswith(f"interrupted {run_id}"), line  # was: running (a fresh last.pt)
    assert "at step " in line and only.strip() != ""  # `--only` lists it for the relaunch

    proc = _start(rdir, tmp_path)  # it resumes; then kill -9 leaves its claim behind
    try:
        def claimed():
            """the resumed run's claim"""
            claim = next(rdir.glob("claims/*.json"), None)
            return claim is not None and json.loads(claim.read_text()).get("pid") == proc.pid

        wait_for(claimed)
        assert status.main(launch) == 0 and "running " in capsys.readouterr().out
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert next(rdir.glob("claims/*.json")).is_file()  # a dead pid's claim
    line, only = _state(launch, capsys)
    assert line.startswith(f"interrupted {run_id}"), line  # not running: its pid is gone
    assert "pid" not in line and only.strip() != ""


def test_with_claims_off_a_fresh_checkpoint_still_reads_as_running(tmp_path, capsys):
    launch = [*TINY, f"results.dir={tmp_path}", "train.steps=400", "study.claims=false"]
    ((_, cfg),) = status.points(launch)
    run_id = status.state_of(cfg)["run_id"]
    ckpt = tmp_path / "ckpt" / run_id / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    assert status.state_of(cfg)["state"] == "running"
    old = time.time() - 2 * status.RUNNING_S
    os.utime(ckpt, (old, old))
    assert status.state_of(cfg)["state"] == "interrupted"  # was: missing, though last.pt is there


def _train_row(run_cli) -> tuple[Path, dict]:
    code, rdir = run_cli("train.steps=2")
    (path,) = (rdir / "runs").glob("*.json")
    assert code == 0
    return rdir, json.loads(path.read_text())


@pytest.mark.parametrize("edit,why", [
    ({"top1": 1.7}, "top1=1.7 is out of range"),
    ({"top1": "0.5x"}, "top1='0.5x' is not a number"),
    ({"train_flops": -5}, "train_flops=-5 is out of range"),
    ({"params": True}, "params=True is not a number"),
    ({"status": "done"}, "status 'done' is not one of"),
])
def test_a_row_with_a_bad_value_is_named_broken_by_the_report_and_status(
        run_cli, tmp_path, capsys, edit, why):
    from benchbench.report import cli as report_cli

    rdir, row = _train_row(run_cli)
    path = results.row_path(rdir, row["run_id"])
    path.write_text(json.dumps({**row, **edit}))
    capsys.readouterr()
    rows, broken = results.load_rows(rdir)
    assert not rows and len(broken) == 1 and why in broken[0][1]

    report_cli.main([str(rdir), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert "broken row file" in err and why in err
    md = (tmp_path / "report" / "report.md").read_text() if (tmp_path / "report" / "report.md"
                                                             ).exists() else ""
    assert "170.0%" not in md

    launch = [*TINY, f"results.dir={rdir}", "train.steps=2"]
    assert status.main(launch) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith(f"broken      {row['run_id']}"), cap.out
    assert why in cap.err


@pytest.mark.parametrize("text", ['{"run_id": "abc", "sta', '{"run_id": "abc"}'])
def test_a_cut_row_or_one_without_status_is_broken_not_running(tmp_path, capsys, text):
    launch = [*TINY, f"results.dir={tmp_path}", "train.steps=2"]
    ((_, cfg),) = status.points(launch)
    run_id = status.state_of(cfg)["run_id"]
    path = results.row_path(tmp_path, run_id)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert status.state_of(cfg)["state"] == "broken"  # was: running (a fresh file)
