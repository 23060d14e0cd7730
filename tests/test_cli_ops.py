"""Operating a study from the command line: flags anywhere, provenance of where a row ran."""
from __future__ import annotations

from benchbench import cli


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
