"""Operating a study from the command line: flags anywhere, provenance of where a row ran."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

from benchbench import cli, jobenv, results


def test_flag_value_after_overrides_stays_with_its_flag():
    flags, overrides = cli.split_flags(["model=vit_micro", "--cfg", "job", "-m", "seed=1,2"])
    assert flags == ["--cfg", "job", "-m"]
    assert overrides == ["model=vit_micro", "seed=1,2"]
    assert cli.split_flags(["x=1", "--info", "defaults", "-p", "model"]) == (
        ["--info", "defaults", "-p", "model"], ["x=1"])
    assert cli.split_flags(["--info", "x=1"]) == (["--info"], ["x=1"])


def test_cfg_job_after_overrides_prints_the_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["model=vit_micro", "train.epochs=3", "--cfg", "job"])
    out = capsys.readouterr().out
    assert code == 0
    assert "epochs: 3" in out and "vit_micro" in out
    assert not (tmp_path / "results").exists()  # printed, nothing ran


def _row(rdir):
    (path,) = (rdir / "runs").glob("*.json")
    return json.loads(path.read_text())


def test_row_records_the_slurm_array_job_and_submitit_log(run_cli, monkeypatch, tmp_path):
    for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
              "SUBMITIT_EXECUTOR", "SUBMITIT_FOLDER"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "1043")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "1040")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SUBMITIT_FOLDER", str(tmp_path / "logs" / "%j"))
    code, rdir = run_cli("task=measure")
    row = _row(rdir)
    assert code == 0 and row["status"] == "ok"
    assert row["slurm_job_id"] == "1040_3" and row["slurm_array_task_id"] == "3"
    assert row["log_path"] == str(tmp_path / "logs" / "1040_3" / "1040_3_0_log.out")
    assert row["hostname"]


def test_row_outside_a_cluster_has_null_job_fields(monkeypatch):
    for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
              "SUBMITIT_EXECUTOR", "SUBMITIT_FOLDER"):
        monkeypatch.delenv(k, raising=False)
    assert jobenv.job_fields() == dict.fromkeys(jobenv.FIELDS)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert jobenv.job_fields()["slurm_job_id"] == "77"
    assert set(jobenv.FIELDS) <= set(results.EXTRA_FIELDS)


@pytest.mark.parametrize("launcher", ["slurm_gpu", "local_gpus"])
def test_launcher_presets_name_jobs_after_the_study(launcher):
    from hydra import compose, initialize_config_dir

    cli._register_resolvers()
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["study=demo", f"hydra/launcher={launcher}"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher.name == "demo"


def test_submitit_local_row_names_its_log_file(tmp_path):
    """A real submitit_local job (the preset named after the study) writes the path of the
    log it printed to into its row."""
    rdir = tmp_path / "r"
    out = subprocess.run(
        [sys.executable, "-m", "benchbench.cli", "-m", "hydra/launcher=local_gpus",
         "hydra.launcher.gpus_per_node=0", "task=measure", "quiet=true", f"results.dir={rdir}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    log = Path(_row(rdir)["log_path"])
    assert log.is_file() and log.name.endswith("_0_log.out") and ".submitit" in log.parts


def test_status_lists_each_point_of_the_launch_and_pastes_the_missing(run_cli, capsys, tmp_path):
    from benchbench import status

    code, rdir = run_cli("task=measure", "seed=0")
    assert code == 0
    capsys.readouterr()
    launch = [*TINY, f"results.dir={rdir}", "task=measure", "-m", "seed=0,1"]
    assert status.main(launch) == 0
    lines = capsys.readouterr().out.splitlines()
    (ok,) = [x for x in lines if x.startswith("ok ")]
    (missing,) = [x for x in lines if x.startswith("missing ")]
    assert "seed=0" in ok and "seed=1" in missing
    (row,) = (rdir / "runs").glob("*.json")
    assert row.stem in ok and str(row) in ok
    assert lines[-1] == "2 points: 1 ok, 1 missing"

    assert status.main([*launch, "--only", "missing,failed"]) == 0
    (paste,) = capsys.readouterr().out.splitlines()
    assert "seed=1" in paste.split() and "-m" not in paste.split()
    code, _ = run_cli(*paste.split(), tiny=False)  # the printed line runs the missing point
    assert code == 0 and len(list((rdir / "runs").glob("*.json"))) == 2
    capsys.readouterr()
    assert status.main([*launch, "--only", "missing"]) == 0
    assert capsys.readouterr().out == ""


def test_status_names_a_broken_row_and_sees_an_interrupted_point(run_cli, capsys):
    from benchbench import status

    code, rdir = run_cli("task=measure", "seed=0")
    (row,) = (rdir / "runs").glob("*.json")
    row.write_text('{"run_id": "x", "sta')  # cut mid-write by hand
    launch = [*TINY, f"results.dir={rdir}", "task=measure", "-m", "seed=0,1"]
    over, cfg = next(p for p in status.points(launch) if "seed=1" in p[0])
    other = status.state_of(cfg)["run_id"]
    (rdir / "ckpt" / other).mkdir(parents=True)
    (rdir / "ckpt" / other / "last.pt").write_bytes(b"")
    capsys.readouterr()
    assert status.main(launch) == 0
    cap = capsys.readouterr()
    assert str(row) in cap.err and "broken row" in cap.err
    # a checkpoint without a live claim is interrupted, a cut row broken (issue 23 items 5, 7)
    assert cap.out.splitlines()[-1] == "2 points: 1 interrupted, 1 broken"
    assert status.main([*launch, "--only", "bogus"]) == 2
