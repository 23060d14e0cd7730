"""Preemption under submitit, for real (issue 14, item 5): a Hydra multirun through
hydra/launcher=submitit_local, signals sent to the job process as SLURM sends them."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, wait_for

# 30 steps of ~50 ms, a checkpoint every 0.2 s: both signals land mid-training
POINT = ["train.steps=30", "threads=1", "eval.internals=false", "train.checkpoint_every_s=0.2"]




def test_sigterm_then_usr2_under_submitit_requeues_and_resumes_to_the_same_row(tmp_path,
                                                                                run_cli, capsys):
    """SLURM on preemption: SIGTERM (submitit bypasses it), then USR2 (submitit requeues).
    SIGTERM writes a checkpoint and the job trains on; USR2 checkpoints again, submitit
    requeues the job, the new process resumes from the checkpoint, and the row is the row
    of a run that never stopped."""
    rdir = tmp_path / "sub"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchbench.cli", "-m", "hydra/launcher=submitit_local",
         "hydra.launcher.timeout_min=60", *TINY, *POINT, f"results.dir={rdir}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def claimed_with_a_checkpoint():
            """the job's claim and its first checkpoint"""
            claim = next(rdir.glob("claims/*.json"), None)
            return (claim is not None and next(rdir.glob("ckpt/*/last.pt"), None) is not None
                    and json.loads(claim.read_text()))

        claim = wait_for(claimed_with_a_checkpoint)
        job_err = Path(claim["log_path"]).with_name(f"{claim['job']}_0_log.err")
        os.kill(claim["pid"], signal.SIGTERM)  # the job process, not the launcher

        def sigterm_line():
            """benchbench's SIGTERM line in the job's log"""
            return re.search(r"SIGTERM at step (\d+) under submitit", job_err.read_text())

        term_step = int(wait_for(sigterm_line).group(1))
        os.kill(claim["pid"], 0)  # still alive: SIGTERM did not stop it
        os.kill(claim["pid"], signal.SIGUSR2)
        code, ref = run_cli(*POINT, results=tmp_path / "ref")  # while the job is requeued
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0 and proc.returncode == 0, err[-3000:]
    assert "1 points: 1 ok" in out
    job_log = job_err.read_text() + job_err.with_suffix(".out").read_text()
    assert "Caught signal SIGUSR2" in job_log and "Requeued job" in job_log
    assert job_log.count("Starting with JobEnvironment") == 2  # the same job, run again
    resumed = int(re.search(r"resumed from step (\d+) of 30", job_log).group(1))
    assert resumed > term_step  # trained on after SIGTERM; USR2's checkpoint is later

    (want,) = [json.loads(p.read_text()) for p in (ref / "runs").glob("*.json")]
    (got,) = [json.loads(p.read_text()) for p in (rdir / "runs").glob("*.json")]
    assert got["run_id"] == want["run_id"] and got["status"] == "ok"
    assert got["resumed"] is True and want["resumed"] is False
    assert got["steps"] == want["steps"] == 30 and got["samples_seen"] == want["samples_seen"]
    assert got["top1"] == want["top1"] and got["final_loss"] == pytest.approx(want["final_loss"])
    assert not list(rdir.glob("ckpt/*/last.pt")) and not list(rdir.glob("claims/*"))

    from benchbench import status  # the launch's overrides: the point is ok, with the job's log

    capsys.readouterr()
    assert status.main([*TINY, *POINT, f"results.dir={rdir}"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"ok          {got['run_id']}") and got["log_path"] in shown
    assert got["log_path"] == claim["log_path"] and "1 points: 1 ok" in shown
