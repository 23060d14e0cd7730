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


def _nested_subset_loop(y, n, seed):
    """The per-class loop nested_subset replaced: the reference its subsets must equal."""
    import torch

    from benchbench.data.base import _seed

    g = torch.Generator().manual_seed(_seed(seed, 0x5B5E7))
    classes, inverse = torch.unique(y, return_inverse=True)
    rank = torch.empty(len(y), dtype=torch.int64)
    for ci in range(len(classes)):
        idx = (inverse == ci).nonzero().flatten()
        rank[idx[torch.randperm(len(idx), generator=g)]] = torch.arange(len(idx))
    class_pos = torch.randperm(len(classes), generator=g)
    return torch.argsort(rank * len(classes) + class_pos[inverse])[:n].sort().values


def test_vectorised_subsets_equal_the_loop_so_committed_rows_keep_their_images():
    import torch

    from benchbench.data import nested_subset

    for t in range(12):
        g = torch.Generator().manual_seed(t)
        k = int(torch.randint(1, 40, (1,), generator=g))
        y = torch.randint(0, k, (int(torch.randint(1, 2000, (1,), generator=g)),), generator=g)
        y = y * 3 - 4 if t % 2 else y  # sparse and negative labels take the unique() path
        n = int(torch.randint(1, len(y) + 1, (1,), generator=g))
        assert torch.equal(nested_subset(y, n, t), _nested_subset_loop(y, n, t))


def test_subset_benchmark_runs(capsys):
    from benchbench.bench import subsets

    subsets.main(["--n", "20000", "--classes", "300", "--sizes", "1000,5000"])
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert [d["measure"] for d in lines][:2] == ["nested_subset"] * 2 and lines[-1]["seconds"] > 0


def test_workers_default_to_the_cpus_this_process_may_use(monkeypatch):
    import os

    from benchbench.data.readers.folders import available_cpus

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert available_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert available_cpus() == 3


def test_loader_benchmark_runs(capsys, monkeypatch, tmp_path):
    from benchbench.bench import loader

    monkeypatch.setenv("BENCHBENCH_CACHE", str(tmp_path))
    loader.main(["--images", "24", "--workers", "1", "--batch", "4", "--size", "32"])
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert [d["measure"] for d in lines] == ["decode_cost", "decode_loop", "imagefolder",
                                             "imagefolder+augment", "webdataset", "webdataset+augment"]
    assert all(d["img_per_s"] > 0 for d in lines[1:]) and lines[2]["ratio_to_decode_loop"] > 0
