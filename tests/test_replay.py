"""task=replay: a point's row copied from an earlier results dir, or missing (issue 25, item 4)."""
from __future__ import annotations

import json

import pytest

from benchbench import results, status
from benchbench.tasks import replay

POINT = ["quiet=true", "eval.internals=false", "data.train_size=128", "data.test_size=64",
         "train.batch_size=64", "train.steps=2", "eval.batch_size=128"]


def _rows(rdir):
    return {r["run_id"]: r for r in map(results.read_row, results.iter_row_files(rdir))}


@pytest.fixture
def pool(run_cli, tmp_path):
    """A real pool: two trained points (seeds 0 and 1)."""
    rdir = tmp_path / "pool"
    assert run_cli("-m", "seed=0,1", *POINT, results=rdir, tiny=False)[0] == 0
    return rdir


def test_replay_copies_each_points_row_from_the_pool(run_cli, pool, tmp_path, capsys):
    rep = tmp_path / "rep"
    code, _ = run_cli("-m", "seed=0,1", "task=replay", f"replay.pool={pool}", *POINT,
                      results=rep, tiny=False)
    assert code == 0
    orig, copied = _rows(pool), _rows(rep)
    assert len(copied) == 2 and not set(copied) & set(orig)  # the replay's own run_ids
    for row in copied.values():
        src = results.read_row(row["replayed_from"])
        assert src["run_id"] in orig and src["seed"] == row["seed"]
        assert row["task"] == "replay" and row["status"] == "ok"
        for k in ("top1", "train_flops", "samples_seen", "params", "git_sha", "train_wall_s"):
            assert row[k] == src[k]
        assert row["wall_s"] >= src["wall_s"]  # the original's cost, not the copy's
        # the pool row is the point's task=train row: the run_id it has there
        assert replay.train_run_id(results.identity_config(row["config"])) == src["run_id"]
    # relaunched, the replayed points are done
    capsys.readouterr()
    grid = status.points(["-m", "seed=0,1", "task=replay", f"replay.pool={pool}", *POINT,
                          f"results.dir={rep}"])
    assert [status.state_of(c)["state"] for _, c in grid] == ["ok", "ok"]


def test_a_point_with_no_matching_row_is_missing_and_writes_nothing(run_cli, pool, tmp_path,
                                                                    capsys):
    rep = tmp_path / "rep"
    code, _ = run_cli("seed=7", "task=replay", f"replay.pool={pool}", *POINT, results=rep,
                      tiny=False)
    err = capsys.readouterr().err
    assert code == 2
    (line,) = [ln for ln in err.splitlines() if "missing" in ln]
    assert "no row in replay.pool=" in line and "nothing written" in line
    assert not list(rep.glob("runs/*.json"))
    # in a sweep: the matching point is copied, the other stays missing, the sweep exits 1
    code, _ = run_cli("-m", "seed=0,7", "task=replay", f"replay.pool={pool}", *POINT,
                      results=rep, tiny=False)
    assert code == 1 and len(_rows(rep)) == 1
    grid = status.points(["-m", "seed=0,7", "task=replay", f"replay.pool={pool}", *POINT,
                          f"results.dir={rep}"])
    assert [status.state_of(c)["state"] for _, c in grid] == ["ok", "missing"]


def test_a_row_is_matched_by_its_config_minus_the_task(run_cli, pool, tmp_path):
    # a pool row under another run_id (an older benchbench hashed differently) and task name
    moved = tmp_path / "moved"
    (moved / "runs").mkdir(parents=True)
    src = _rows(pool)
    for rid, row in src.items():
        row.update(run_id=f"old{rid[3:]}", task=None)
        (moved / "runs" / f"old{rid[3:]}.json").write_text(json.dumps(row))
    rep = tmp_path / "rep"
    assert run_cli("-m", "seed=0,1", "task=replay", f"replay.pool={moved}", *POINT,
                   results=rep, tiny=False)[0] == 0
    got = _rows(rep)
    assert sorted(r["replayed_from"].rsplit("/", 1)[1] for r in got.values()) == sorted(
        f"old{rid[3:]}.json" for rid in src)
    # a replayed dir is itself a pool
    again = tmp_path / "again"
    assert run_cli("seed=1", "task=replay", f"replay.pool={rep}", *POINT, results=again,
                   tiny=False)[0] == 0
    (row,) = _rows(again).values()
    assert row["replayed_from"].startswith(str(rep)) and row["seed"] == 1


@pytest.mark.parametrize("args, match", [
    (["task=replay"], "task=replay needs replay.pool="),
    (["task=replay", "replay.pool=/nonexistent/bb"], "is not a results dir"),
])
def test_a_bad_pool_is_one_line(run_cli, tmp_path, capsys, args, match):
    code, _ = run_cli(*args, *POINT, results=tmp_path / "rep", tiny=False)
    assert code == 2 and match in capsys.readouterr().err


def test_the_launcher_checks_the_replay_keys():
    from benchbench import cli
    from benchbench.errors import ConfigError

    cli.check_args(["task=replay", "replay.pool=/x"])
    with pytest.raises(ConfigError, match="unknown key replay.pol"):
        cli.check_args(["task=replay", "replay.pol=/x"])
