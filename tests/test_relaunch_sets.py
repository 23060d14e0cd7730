"""What a relaunch resubmits and what the report pools, asserted as exact sets (issue 23,
"the tests still let through"): the points resubmitted after a preemption, the rows pooled
as seeds of one point."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from benchbench import relaunch, results
from benchbench.report.load import load_study, point_key
from benchbench.tasks import TASKS

MEASURE = ["task=measure"]


def _rows(rdir: Path) -> dict[int, str]:
    return {r["seed"]: r["status"] for r in results.load_rows(rdir)[0]}


def test_a_relaunch_after_preemption_resubmits_exactly_the_interrupted_and_missing_points(
        run_cli, capsys, monkeypatch):
    real = TASKS.get("measure")

    def preempted(cfg, row, **kw):
        if int(cfg.seed) == 1:  # SIGTERM outside training: an `interrupted` row, exit 130
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        return real(cfg, row, **kw)

    sweep = ["-m", *MEASURE, "seed=0,1,2,3"]
    with monkeypatch.context() as m:
        m.setitem(TASKS._items, "measure", preempted)
        code, rdir = run_cli(*sweep)
    assert code == 130 and _rows(rdir) == {0: "ok", 1: "interrupted"}  # 2 and 3 never ran
    capsys.readouterr()

    submitted: list[list[list[str]]] = []
    plain = relaunch.to_submit

    def spy(grid, compose, sweep_dir):
        submitted.append(plain(grid, compose, sweep_dir))
        return submitted[-1]

    monkeypatch.setattr(relaunch, "to_submit", spy)
    code, _ = run_cli(*sweep)
    out = capsys.readouterr().out
    assert code == 0 and "benchbench: 1 of 4 points are done; submitting 3" in out
    (grid,) = submitted
    assert [[o for o in over if o.startswith("seed=")] for over in grid] == [
        ["seed=1"], ["seed=2"], ["seed=3"]]  # the interrupted point and the missing ones
    assert _rows(rdir) == {0: "ok", 1: "ok", 2: "ok", 3: "ok"}


def _row(seed: int, *, data_seed: int, train_size: int = 100, top1: float = 0.5) -> dict:
    cfg = {"seed": seed, "model": {"name": "vit_micro", "patch_size": 4},
           "data": {"name": "synthetic", "seed": data_seed, "train_size": train_size},
           "train": {"epochs": 1, "seed": seed}, "task": {"name": "train"}}
    row = results.empty_row()
    row.update(run_id=results.run_id_of(cfg), study="s", status="ok", task="train", seed=seed,
               family="ViT", model="ViT-micro/4", patch_size=4, image_size=32, num_classes=10,
               params=1000, flops_per_image=10**6, train_flops=3 * 10**8, samples_seen=100,
               dataset="synthetic", train_size=train_size, top1=top1, wall_s=1.0, config=cfg,
               started_at="2026-01-01T00:00:00+00:00")
    return row


def test_rows_that_differ_only_in_nested_seeds_are_pooled_as_seeds_of_one_point(tmp_path):
    rows = [_row(s, data_seed=s, top1=0.4 + 0.1 * s) for s in (0, 1, 2)]
    rows.append(_row(0, data_seed=0, train_size=200))  # another point: more data
    for r in rows:
        results.write_row(r, tmp_path)
    assert len({point_key(r) for r in rows}) == 2  # data.seed and train.seed are seeds too
    study = load_study(tmp_path)
    sizes = study.train.groupby("point")["seed"].apply(sorted).tolist()
    assert sorted(sizes) == [[0], [0, 1, 2]]
    from benchbench.report.load import aggregate_points

    pts = aggregate_points(study.train)
    pooled = pts[pts["n_seeds"] == 3]
    assert len(pts) == 2 and len(pooled) == 1
    assert sorted(pooled.iloc[0]["acc_values"]) == pytest.approx([0.4, 0.5, 0.6])
    assert json.loads(point_key(rows[0])) == json.loads(point_key(rows[2]))


def test_two_launches_at_once_end_with_the_rows_as_they_are_now(run_cli, capsys, tmp_path):
    """Issue 23 item 10: the second launch skipped the point the first was running, and
    its summary, printed after the first had finished it, still said `1 running`, exit 1."""
    import subprocess
    import sys

    from conftest import TINY

    rdir = tmp_path / "results"
    # the first launch's point trains for seconds: the second plans while it runs
    point = [*TINY, "train.steps=150", "threads=1", "eval.internals=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "benchbench.cli", "-m", *point, "seed=0",
                              f"results.dir={rdir}"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while not list(rdir.glob("claims/*.json")) and time.time() < deadline:
            time.sleep(0.05)
        assert list(rdir.glob("claims/*.json")), "the first launch never claimed its point"
        # the second launch: seed 0 is running in the first; it trains seed 1 itself, and
        # that ends after the first launch has ended (it waits for it: a fixed order)
        real = TASKS.get("train")

        def after_the_first(*a, **kw):
            first.wait(timeout=120)
            return real(*a, **kw)

        with pytest.MonkeyPatch.context() as m:
            m.setitem(TASKS._items, "train", after_the_first)
            code, _ = run_cli("-m", *point, "seed=0,1", results=rdir, tiny=False)
        out1, err1 = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    cap = capsys.readouterr()
    assert first.returncode == 0, err1[-2000:]
    assert "1 running elsewhere; submitting 1" in cap.out
    assert _rows(rdir) == {0: "ok", 1: "ok"}
    assert "running" not in cap.err, cap.err  # was: "  running: <id>: running elsewhere ..."
    assert "2 points: 1 ok, 1 skipped (1 already ok in the results dir)" in cap.out, cap.out
    assert code == 0


def _read_only(rdir: Path) -> list[list[str]]:
    """Make rdir (and every folder in it) read-only; returns the commands that undo it.
    As root chmod is ignored: the immutable attribute (chattr +i) binds root too."""
    import shutil
    import subprocess

    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(rdir)], check=True)
        return [["chmod", "-R", "u+w", str(rdir)]]
    if shutil.which("chattr") is None:
        import pytest

        pytest.skip("root without chattr: no way to make a folder read-only")
    dirs = [str(p) for p in [rdir, *rdir.rglob("*")] if p.is_dir()]
    if subprocess.run(["chattr", "+i", *dirs], capture_output=True).returncode:
        import pytest

        pytest.skip("chattr +i is not permitted here")
    return [["chattr", "-i", *dirs]]


def test_a_finished_sweep_on_read_only_storage_is_done_not_unwritable(run_cli, capsys):
    """Issue 23 item 11: relaunching a complete sweep over a read-only copy said `cannot
    write the rows`; it is done, and a relaunch writes nothing."""
    import subprocess

    sweep = ["-m", *MEASURE, "seed=0,1,2"]
    code, rdir = run_cli(*sweep)
    assert code == 0
    capsys.readouterr()
    undo = _read_only(rdir)
    try:
        assert not os.access(rdir, os.W_OK) or os.geteuid() == 0
        code, _ = run_cli(*sweep)
        cap = capsys.readouterr()
        assert code == 0, cap.err
        assert "benchbench: all 3 points are done; nothing to submit" in cap.out
        assert "cannot write" not in cap.err
        code, _ = run_cli(*MEASURE, "seed=3")  # a point not done: the write error, as before
        assert code == 2 and "cannot write the rows" in capsys.readouterr().err
    finally:
        for cmd in undo:
            subprocess.run(cmd, check=True)


def _folder(root: Path, per_class: dict[str, int]) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        for c, n in per_class.items():
            (root / part / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / part / c / f"{i}.png")


def test_failures_the_user_fixed_do_not_count_against_the_study(run_cli, capsys, tmp_path):
    """Issue 23 item 2: a point that failed on bad data (an empty class folder) has a run_id
    without the dataset fingerprint; after the fix the relaunch ran a new run_id, and every
    later report said `1 ok, 1 not ok`. A config refused at start (train.epochs=-1) too."""
    from benchbench.report.cli import main as report

    data = tmp_path / "data"
    _folder(data, {"cat": 4, "dog": 4})
    (data / "train" / "emu").mkdir()  # an empty class folder: a DataError
    (data / "val" / "emu").mkdir()
    point = ["quiet=true", "data=imagefolder", f"data.root={data}", "train.steps=2",
             "train.batch_size=4", "eval.batch_size=8", "eval.internals=false"]
    code, rdir = run_cli(*point, tiny=False)
    assert code == 2
    code, _ = run_cli(*point, "train.epochs=-1", "train.steps=null", tiny=False)
    assert code == 2
    _folder(data, {"emu": 4})  # the fix
    code, _ = run_cli(*point, tiny=False)
    assert code == 0
    rows = results.load_rows(rdir)[0]
    assert sorted((r["status"], r["error_type"]) for r in rows) == [
        ("failed", "ConfigError"), ("failed", "DataError"), ("ok", None)]
    capsys.readouterr()

    assert report([str(rdir), "--n-boot", "0", "--formats", "png"]) == 0
    md = (rdir / "report" / "report.md").read_text()
    assert "Rows: 1 ok (1 train), 0 not ok" in md, md[:600]
    assert "2 superseded failure(s) left out" in md
    assert "Runs that did not finish ok" not in md

    # a failure that was not fixed still counts: another seed that diverges stays not ok
    ok = next(r for r in rows if r["status"] == "ok")
    other = {**ok, "run_id": "0123456789ab", "status": "failed", "error_type": "RuntimeError",
             "seed": 1, "config": {**ok["config"], "seed": 1}}
    results.write_row(other, rdir)
    assert report([str(rdir), "--n-boot", "0", "--formats", "png"]) == 0
    md = (rdir / "report" / "report.md").read_text()
    assert "Rows: 1 ok (1 train), 1 not ok" in md and "2 superseded failure(s)" in md
