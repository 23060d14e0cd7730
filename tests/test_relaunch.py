"""Relaunching a study (issue 14, item 4): only what is not done gets a job, and a point that
another live process claims is left alone; benchbench-status sees claims and bad points."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY

from benchbench import claims, results, status

MEASURE = ["task=measure"]


def rows_of(rdir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((rdir / "runs").glob("*.json"))}


def run_id_of(rdir: Path, *over: str) -> str:
    """The run_id benchbench-status (the launch's own composition) gives a point."""
    (point,) = status.points([*TINY, f"results.dir={rdir}", *over])
    return status.state_of(point[1])["run_id"]


def lines(text: str, prefix: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith(prefix)]


def test_relaunch_submits_only_the_points_not_done(run_cli, capsys):
    code, rdir = run_cli("-m", *MEASURE, "seed=0,1")
    assert code == 0
    assert "benchbench: 0 of 2 points are done; submitting 2" in capsys.readouterr().out
    before = {p: p.stat().st_mtime_ns for p in (rdir / "runs").glob("*.json")}

    code, _ = run_cli("-m", *MEASURE, "seed=0,1,2")
    out = capsys.readouterr().out
    assert code == 0
    assert "benchbench: 2 of 3 points are done; submitting 1" in out
    assert len(lines(out, "[ok]")) == 1 and not lines(out, "skip ")  # one job, no skip inside
    assert "3 points: 1 ok, 2 skipped (2 already ok in the results dir)" in out, out
    assert {p: p.stat().st_mtime_ns for p in before} == before  # done rows untouched
    assert len(rows_of(rdir)) == 3

    code, _ = run_cli("-m", *MEASURE, "seed=0,1,2")
    out = capsys.readouterr().out
    assert code == 0 and "benchbench: all 3 points are done; nothing to submit" in out
    assert not lines(out, "[") and "3 points: 3 skipped" in out
    assert len(list((rdir / "logs").glob("sweep-*"))) == 3  # one log dir per launch, even
    # two launches in one process within a second (the summary reads only its own)


def test_a_kept_failure_is_not_submitted_and_the_relaunch_still_exits_1(run_cli, capsys):
    sweep = ["-m", *MEASURE, "model.patch_size=4,5"]  # 5 does not divide 32: a failed row
    code, rdir = run_cli(*sweep)
    assert code == 1
    capsys.readouterr()
    code, _ = run_cli(*sweep)
    cap = capsys.readouterr()
    assert code == 1  # a requested point is not ok
    assert ("benchbench: 1 of 2 points are done, 1 already failed (study.retry_failed=true "
            "runs them); nothing to submit") in cap.out
    assert "skipped, already failed (study.retry_failed=true runs it)" in cap.err

    code, _ = run_cli(*sweep, "study.retry_failed=true")
    out = capsys.readouterr().out
    assert code == 1 and "benchbench: 1 of 2 points are done; submitting 1" in out
    assert len(lines(out, "[failed]")) == 1


def test_a_failure_fixed_outside_is_submitted_without_being_asked(run_cli, capsys):
    code, rdir = run_cli("-m", *MEASURE, "model.patch_size=5")
    (rid, row), = rows_of(rdir).items()
    row["error_type"] = "DataError"  # as if the dataset had been missing
    (rdir / "runs" / f"{rid}.json").write_text(json.dumps(row))
    capsys.readouterr()
    code, _ = run_cli("-m", *MEASURE, "model.patch_size=5")
    out = capsys.readouterr().out
    assert "benchbench: 0 of 1 points are done; submitting 1" in out
    assert "retry " in out and "DataError" in out


def test_points_with_one_run_id_get_one_job(run_cli, capsys):
    code, rdir = run_cli("-m", *MEASURE, "model=bit_micro", "model.patch_size=8,16")
    out = capsys.readouterr().out
    assert code == 0
    assert "benchbench: 0 of 2 points are done, 1 same run as another point; submitting 1" in out
    assert "2 points: 1 ok, 1 skipped (1 same run as another point: CNNs have no patch size)" in out
    assert len(rows_of(rdir)) == 1


def _claim(rdir: Path, run_id: str, *, host: str = "node-7", pid: int = 4242,
           age_s: float = 0.0, job: str | None = "981_3", restart: int = 0) -> Path:
    path = claims.claim_path(rdir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": run_id, "host": host, "pid": pid, "job": job,
                                "restart": restart, "token": "t" * 32, "log_path": "/logs/x.out",
                                "heartbeat": time.time() - age_s}))
    return path


def test_a_point_claimed_elsewhere_is_neither_submitted_nor_trained(run_cli, capsys, tmp_path):
    rdir = tmp_path / "results"
    rid = run_id_of(rdir, *MEASURE, "seed=1")
    _claim(rdir, rid)
    code, _ = run_cli("-m", *MEASURE, "seed=0,1")
    cap = capsys.readouterr()
    assert code == 1  # not done yet
    assert "benchbench: 0 of 2 points are done, 1 running elsewhere; submitting 1" in cap.out
    assert "running: " + rid + ": running elsewhere (host node-7, job 981_3, pid 4242" in cap.err
    assert rid not in rows_of(rdir)

    assert status.main([*TINY, f"results.dir={rdir}", "-m", *MEASURE, "seed=0,1"]) == 0
    out = capsys.readouterr().out
    (running,) = lines(out, "running ")
    assert rid in running and "/logs/x.out" in running and "host node-7, job 981_3" in running

    # the point's own guard (a job that was submitted anyway): no row, exit 1, says who
    code, _ = run_cli(*MEASURE, "seed=1")
    out = capsys.readouterr().out
    assert code == 1 and f"skip {rid}: running elsewhere (host node-7" in out
    assert rid not in rows_of(rdir)


@pytest.mark.parametrize("kind", ["stale", "dead_pid", "requeued_job"])
def test_a_dead_claim_is_taken_over_with_a_line(run_cli, capsys, tmp_path, monkeypatch, kind):
    rdir = tmp_path / "results"
    rid = run_id_of(rdir, *MEASURE)
    if kind == "stale":
        _claim(rdir, rid, age_s=1000)  # older than 5 x the 60 s heartbeat
        why = "its heartbeat is 100"  # 1000-odd seconds
    elif kind == "dead_pid":
        gone = subprocess.Popen([sys.executable, "-c", ""])
        gone.wait()
        _claim(rdir, rid, host=socket.gethostname(), pid=gone.pid)
        why = f"its process {gone.pid} on {socket.gethostname()} is gone"
    else:  # SLURM requeued this job onto another node: same job id, a higher restart count
        monkeypatch.setenv("SLURM_JOB_ID", "981")
        monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
        _claim(rdir, rid, job="981")
        why = "an earlier run of this job (981, requeued) left it"
    code, _ = run_cli(*MEASURE)
    out = capsys.readouterr().out
    assert code == 0 and f"benchbench: taking over {rid}: {why}" in out
    assert rows_of(rdir)[rid]["status"] == "ok"
    assert not claims.claim_path(rdir, rid).exists()  # released when the point ended


def test_claim_heartbeat_and_release(tmp_path):
    st = claims.Settings(heartbeat_s=0.05, stale_s=0.5)
    c = claims.acquire(tmp_path, "abc", st)
    assert c.holder is None
    first = json.loads(c.path.read_text())
    assert first["pid"] == os.getpid() and first["host"] == socket.gethostname()
    time.sleep(0.3)
    assert json.loads(c.path.read_text())["heartbeat"] > first["heartbeat"] + 0.1
    assert claims.acquire(tmp_path, "abc", st).holder["token"] == first["token"]  # held
    c.release()
    assert not c.path.exists()
    _claim(tmp_path, "abc", age_s=1.0)  # heartbeat older than stale_s: nobody holds it
    assert claims.live_holder(tmp_path, "abc", st) is None
    assert claims.live_holder(tmp_path, "abc", claims.Settings(stale_s=5)) is not None


def _race(rdir: str, barrier, wins, stale_first: bool) -> None:
    st = claims.Settings(heartbeat_s=3600, stale_s=300)
    barrier.wait()
    c = claims.acquire(rdir, "race", st)
    wins.put(c.holder is None)
    if c.holder is None:
        time.sleep(0.5)  # hold it while the others look
        c.release()


@pytest.mark.parametrize("stale_first", [False, True], ids=["fresh", "take_over_stale"])
def test_of_processes_claiming_at_once_exactly_one_wins(tmp_path, stale_first):
    if stale_first:
        _claim(tmp_path, "race", age_s=1000)
    ctx = mp.get_context("fork")
    n = 6
    barrier, wins = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, wins, stale_first))
             for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    got = [wins.get(timeout=5) for _ in range(n)]
    assert sorted(got) == [False] * (n - 1) + [True]
    assert list((tmp_path / "claims").iterdir()) == []  # released; no temp or lock file left


def test_a_takeover_never_removes_a_claim_made_since_it_looked(tmp_path, capsys):
    """Two launches see one stale claim; the first takes it over and claims the point. The
    second's takeover, acting on what it saw before, must leave the new claim alone."""
    path = _claim(tmp_path, "p", age_s=1000)
    seen = claims.read(path)
    assert claims.stale_reason(seen, 300) is not None
    path.write_text(json.dumps({**seen, "token": "n" * 32, "heartbeat": time.time()}))
    claims._take_over(path, seen, "stale", 300)
    assert claims.read(path)["token"] == "n" * 32 and "taking over" not in capsys.readouterr().out
    claims._take_over(path, claims.read(path), "stale", 300)  # what it saw: removed
    assert not path.exists()


def test_status_lists_a_point_that_does_not_resolve_as_an_error_and_goes_on(capsys, tmp_path):
    launch = [f"results.dir={tmp_path}", "-m", "model.variant=ViT-B/16,ViT-Q/3", *MEASURE]
    assert status.main(launch) == 0
    out = capsys.readouterr().out.splitlines()
    (bad,) = lines("\n".join(out), "error ")
    assert "model.variant=ViT-Q/3" in bad and "unknown model variant 'ViT-Q/3'" in bad
    assert out[-1] == "2 points: 1 missing, 1 error"


def test_new_keys_leave_run_ids_alone():
    base = {"model": {"name": "vit_micro"}, "study": {"name": "x"}}
    with_keys = {**base, "study": {"name": "x", "claims": True, "heartbeat_s": 60,
                                   "claim_stale_s": None}}
    assert results.run_id_of(base) == results.run_id_of(with_keys)
