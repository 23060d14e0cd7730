"""Data at cluster scale: smoke caps, dataset identity without the path, vectorised subsets."""
from __future__ import annotations

import json

from conftest import REPO
from hydra import compose, initialize_config_dir

from benchbench.point import resolved_config
from benchbench.results import run_id_of

CONF = str(REPO / "benchbench" / "conf")


def rows_of(rdir):
    return [json.loads(p.read_text()) for p in sorted((rdir / "runs").glob("*.json"))]


def test_smoke_skips_the_probe_a_study_asks_for():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=["study=transfer_demo", "debug=smoke"])
    assert cfg.eval.fewshot is False and cfg.eval.max_samples == 512


def test_smoke_caps_the_evaluation(run_cli, capsys):
    code, rdir = run_cli("debug=smoke", "data.test_size=1000", "eval.batch_size=100",
                         tiny=False, results=None)
    assert code == 0, capsys.readouterr().err
    (row,) = rows_of(rdir)
    assert row["status"] == "ok" and row["eval_samples"] == 512 and row["steps"] == 2


def test_eval_max_samples_null_keeps_run_ids():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config")
    d = resolved_config(cfg)
    assert d["eval"]["max_samples"] is None
    del d["eval"]["max_samples"]
    assert run_id_of(resolved_config(cfg)) == run_id_of(d)
