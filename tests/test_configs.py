"""Every config group option composes; every study file expands to valid points (STYLE 11)."""
from __future__ import annotations

import itertools
import json

import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchbench import cli, models, point

CONF = str(REPO / "conf")
STUDIES = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))


def _compose(overrides):
    cli._register_resolvers()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("group", ["model", "data", "train", "task"])
def test_every_group_option_composes(group):
    for opt in cli.group_options(group):
        cfg = _compose([f"{group}={opt}"])
        assert cfg[group] is not None


def test_study_files_are_the_study_group_and_carry_a_header():
    assert set(STUDIES) == set(cli.group_options("study"))
    assert {"demo", "fashion_mnist_scaling", "paper_fig5", "paper_fig3_4", "paper_fig12"} <= set(STUDIES)
    for s in STUDIES:
        text = (REPO / "sweeps" / f"{s}.yaml").read_text()
        for word in ("# Question:", "# Command", "# Runtime:", "# Rows:"):
            assert word in text, f"sweeps/{s}.yaml lacks '{word}'"


def _grid(cfg):
    params = cfg.hydra.sweeper.params or {}
    keys = list(params)
    values = [str(params[k]).split(",") for k in keys]
    return [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*values)]


# distinct run_ids per study: every point its own run, except that CNN points at two patch
# sizes are one run (demo: 2 BiT points, fashion_mnist_scaling: 3, fashion_mnist_compute:
# 12 collapse into the others)
DISTINCT_RUNS = {"demo": (12, 10), "fashion_mnist_scaling": (18, 15),
                 "fashion_mnist_compute": (48, 36), "paper_fig12": (40, 40),
                 "paper_fig3_4": (24, 24), "paper_fig5": (30, 30), "seed_vit_cifar10": (3, 3),
                 "fashion_mnist_internals": (6, 6),
                 "transfer_demo": (9, 9), "paper_finetune": (4, 4),
                 "fashion_mnist_adaptive": (48, 36)}  # the candidates; the sweep buys some


def test_every_study_has_its_expected_run_count():
    assert set(DISTINCT_RUNS) == set(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_every_point_of_every_study_is_valid_and_builds(study):
    base = _compose([f"study={study}"])
    assert base.hydra.mode.name == "MULTIRUN" and base.study.name == study
    points = _grid(base)
    assert points
    ids = set()
    for over in points:
        cfg = _compose([f"study={study}", *over])
        d = point.resolved_config(cfg)
        from benchbench.results import run_id_of

        ids.add(run_id_of(d))
        m = OmegaConf.create(d["model"])
        image = int(cfg.data.image_size)
        models.validate(m, image)
        with torch.device("meta"):
            net = models.build_model(m, 10, image)
        assert models.count_params(net) > 0
    assert (len(points), len(ids)) == DISTINCT_RUNS[study]


@pytest.mark.parametrize("study,rows", [("demo", 10), ("fashion_mnist_scaling", 15),
                                        ("fashion_mnist_internals", 6),
                                        ("fashion_mnist_compute", 36)])
def test_study_composes_to_exactly_its_committed_rows(study, rows):
    """The points a study composes to today are exactly its committed rows: a relaunch
    skips all of them (a config key added without care would change every run_id)."""
    from benchbench.results import run_id_of

    base = _compose([f"study={study}"])
    ids = {run_id_of(point.resolved_config(_compose([f"study={study}", *o]))) for o in _grid(base)}
    assert len(ids) == rows
    trained = {p.stem for p in (REPO / "results" / study / "runs").glob("*.json")
               if json.loads(p.read_text()).get("task") != "measure"}  # the demo's measure rows
    assert ids == trained


def test_slurm_and_local_launcher_presets_compose():
    cfg = _compose(["study=demo", "hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"])
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.partition == "gpu"
    assert cfg.hydra.launcher.max_num_timeout > 0
    cfg = _compose(["hydra/launcher=local_gpus"])
    assert "LocalLauncher" in cfg.hydra.launcher._target_
