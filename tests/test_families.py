"""The family table drives models, configs and plots; a new family is one entry plus its config."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from torch import nn

from benchbench import cli, families, launch_checks, models
from benchbench.families import FAMILIES, Family, resolve
from benchbench.models import MODELS, ModelSpec
from benchbench.report import plots
from benchbench.report.load import families_in

CONF = Path(cli.__file__).resolve().parent / "conf"


def test_every_model_file_is_a_model_of_a_known_family():
    for f in sorted((CONF / "model").glob("*.yaml")):
        assert OmegaConf.load(f).name in MODELS, f"conf/model/{f.name} names no MODELS entry"
    for name in MODELS:
        assert MODELS.get(name).family in FAMILIES, f"model {name}: family not in FAMILIES"


def test_every_family_has_a_label_a_distinct_style_and_functions_that_resolve():
    fams = [FAMILIES.get(k) for k in families.order()]
    assert all(f.label and families.label(f.key) == f.label for f in fams)
    assert len({(f.color, f.marker) for f in fams}) == len(fams)
    assert len({f.label for f in fams}) == len(fams)
    assert families.UNKNOWN_STYLE not in [families.style(f.key) for f in fams]
    for f in fams:
        for ref in (f.builder, f.name, f.check):
            assert ref is None or callable(resolve(ref))
    assert {MODELS.get(n).family for n in MODELS} == set(families.order())


def test_every_model_has_a_paper_name_and_the_patch_its_family_says():
    for name in MODELS:
        cfg = OmegaConf.create({"name": name, "timm_name": "resnet18" if name == "timm" else None})
        assert models.paper_name(cfg)
        has_patch = FAMILIES.get(MODELS.get(name).family).has_patch
        assert (models.patch_size_of(cfg) is not None) == has_patch == models.has_patch(name)


def test_plots_and_tables_order_families_as_the_table():
    shuffled = pd.DataFrame({"family": list(reversed(families.order())) + ["zzz", None]})
    assert families_in(shuffled) == families.order() + ["zzz"]
    assert families.label("zzz") == "zzz" and families.style("zzz") == families.UNKNOWN_STYLE


# A made-up family, added the way a user adds one: a FAMILIES entry (builder and name as plain
# functions), a MODELS entry and a conf/model/ file; nothing else in benchbench changes.
def build_toy(spec, cfg, patch, num_classes, image_size, in_chans):
    width = spec.extra["width"]
    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size**2, width), nn.ReLU(),
                         nn.Linear(width, num_classes))


TOY = Family("toy", "Toy MLP", "tab:brown", "P", "copper", has_patch=False, conv=False,
             builder=build_toy, name=lambda spec, cfg, patch: f"Toy-{spec.extra['width']}")
TOY_YAML = """# A made-up family's one model (tests/test_families.py)
name: toy_tiny
variant: null
patch_size: null
drop_rate: 0.0
"""


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    # The registries are process-wide: setitem is undone after the test.
    monkeypatch.setitem(FAMILIES._items, "toy", TOY)
    monkeypatch.setitem(MODELS._items, "toy_tiny", ModelSpec("toy", extra={"width": 32}))
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "model" / "toy_tiny.yaml").write_text(TOY_YAML)
    monkeypatch.setattr(cli, "CONF_DIR", conf)  # the package's configs plus the new file
    monkeypatch.setattr(launch_checks, "CONF_DIR", conf)  # where the override checks look
    return conf


def test_a_new_family_runs_end_to_end_and_is_drawn_with_its_label(toy_family, run_cli,
                                                                    tmp_path, monkeypatch):
    m = models.build_model(OmegaConf.create({"name": "toy_tiny"}), 10, 32)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)

    code, rdir = run_cli("model=toy_tiny", "seed=0,1", "-m")
    rows = [json.loads(p.read_text()) for p in sorted((rdir / "runs").glob("*.json"))]
    assert code == 0 and len(rows) == 2
    for row in rows:
        assert row["status"] == "ok" and row["family"] == "toy" and row["model"] == "Toy-32"
        assert row["patch_size"] is None
        assert row["params"] == 3 * 32 * 32 * 32 + 32 + 32 * 10 + 10
        assert row["flops_per_image"] == 2 * (3 * 32 * 32 * 32 + 32 * 10)  # FLOPs = 2 x MACs
        assert row["top1"] is not None and row["train_flops"] > 0

    drawn: dict[str, list[str]] = {}
    savefig = Figure.savefig

    def spy(fig, path, *a, **k):
        labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        labels += [t.get_text() for ax in fig.axes if ax.get_legend()
                   for t in ax.get_legend().get_texts()]
        drawn[Path(path).stem] = labels
        return savefig(fig, path, *a, **k)

    monkeypatch.setattr(Figure, "savefig", spy)
    from benchbench.report.cli import main as report

    out = tmp_path / "report"
    assert report([str(rdir), "--out", str(out), "--formats", "png", "--n-boot", "20"]) == 0
    assert "Toy MLP" in drawn["compute_vs_accuracy"] and "Toy MLP" in drawn["time_vs_accuracy"]
    assert "| Toy MLP | Toy-32 |" in (out / "runs.md").read_text()
    assert plots.models_in(pd.DataFrame(rows)) == ["Toy-32"]
