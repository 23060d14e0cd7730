"""The task registry mirrors conf/task/, and every task's failure becomes its row's status."""
from __future__ import annotations

import pytest

from benchbench import results
from benchbench.cli import CONF_DIR
from benchbench.errors import ConfigError
from benchbench.tasks import TASKS


def _rows(rdir):
    return results.load_rows(rdir)[0]


def test_tasks_are_the_files_of_conf_task():
    assert set(TASKS.names()) == {p.stem for p in (CONF_DIR / "task").glob("*.yaml")}


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown task 'trian'\. Did you mean 'train'\? "
                                          r"Valid tasks: train, "):
        TASKS.get("trian")


def test_unknown_task_name_is_a_failure_row(run_cli, capsys):
    code, rdir = run_cli("task.name=trian")
    (row,) = _rows(rdir)
    assert code == 2 and row["status"] == "failed" and "Valid tasks:" in row["error"]
    assert "Traceback" not in capsys.readouterr().err


def test_cublas_alloc_failure_in_training_is_an_oom_row(run_cli, monkeypatch):
    from benchbench import models

    def build(*a, **k):
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate`")

    monkeypatch.setattr(models, "build_model", build)
    code, rdir = run_cli()
    (row,) = _rows(rdir)
    assert code == 1 and row["status"] == "oom"
    assert row["error"] == ("out of memory at batch size 64; lower train.batch_size "
                            "(or measure.batch_size)")


def test_flop_budget_is_a_row_column_not_part_of_the_run_id(run_cli, tmp_path):
    code, rdir = run_cli("train.flops=3000000000", "train.epochs=null")  # about 3 steps
    (row,) = _rows(rdir)
    assert code == 0 and row["train_flops_budget"] == 3000000000
    assert 0 < row["train_flops"] <= row["train_flops_budget"]
    assert "train_flops_budget" not in str(row["config"])
    assert results.run_id_of(row["config"]) == row["run_id"]
    code, rdir = run_cli(results=tmp_path / "epochs")
    (row,) = _rows(rdir)
    assert code == 0 and row["train_flops_budget"] is None
