"""Training runs that learn: clearly above chance on the embedded data and on Fashion-MNIST,
through the real entry point (a broken loss, loader or optimizer would fail these)."""
from __future__ import annotations

import pytest
from conftest import FASHION_DIR

from benchbench import results


def _row(rdir):
    (row,) = results.load_rows(rdir)[0]
    assert row["status"] == "ok", row["error"]
    return row


def test_cnn_learns_the_embedded_data(run_cli):
    code, rdir = run_cli("model=bit_micro", "data.train_size=3000", "data.test_size=500",
                         "train.epochs=6", "quiet=true", tiny=False)
    row = _row(rdir)
    assert code == 0 and row["top1"] > 0.2  # chance: 0.10
    assert row["final_loss"] < 2.15  # ln(10) = 2.30 at chance


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_vit_learns_fashion_mnist(run_cli):
    code, rdir = run_cli("data=fashion_mnist", "data.train_size=1000", "data.test_size=1000",
                         "train.epochs=8", "data.augment=false", "quiet=true", tiny=False)
    row = _row(rdir)
    assert code == 0 and row["model"] == "ViT-micro/8" and row["dataset"] == "fashion_mnist"
    assert row["top1"] > 0.5 and row["top5"] > 0.85  # chance: 0.10 / 0.50


def test_local_gpus_spread_submitit_local_points(monkeypatch):
    from omegaconf import OmegaConf

    from benchbench.runtime import assign_local_gpu

    cfg = OmegaConf.create({"local_gpus": [0, 1, 2]})
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    seen = []
    for job in range(5):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what submitit gives every job
        assign_local_gpu(cfg, job)
        seen.append(__import__("os").environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["0", "1", "2", "0", "1"]
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # SLURM assigns GPUs itself
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assign_local_gpu(cfg, 1)
    assert __import__("os").environ["CUDA_VISIBLE_DEVICES"] == "3"
