"""Issue 22 item 3: AugReg by its names, RandAugment on big_vision's scale (timm's ops), and
dropout / stochastic depth that reach the model."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from benchbench import models, results
from benchbench.data import augment as aug
from benchbench.data import augreg
from benchbench.errors import ConfigError


def _rotations(layers: int, magnitude: int, n: int = 400) -> list[float]:
    """The rotation angles the transform's Rotate op draws (timm's level -> arg mapping)."""
    ra = augreg.rand_augment(layers, magnitude)
    op = next(o for o in ra.ops if o.name == "Rotate")
    upper = op.magnitude_max or 10
    level = max(0.0, min(op.magnitude, upper))  # as timm's AugmentOp clamps it
    return [op.level_fn(level, op.hparams)[0] for _ in range(n)]


def test_randaugment_magnitude_10_rotates_30_degrees_as_big_vision():
    angles = _rotations(2, 10)
    assert max(angles) == pytest.approx(30.0) and min(angles) == pytest.approx(-30.0)
    assert max(_rotations(2, 20)) == pytest.approx(60.0)  # big_vision does not clamp at 10
    # torchvision's RandAugment (what benchbench used before) rotates 10 degrees at m=10
    from torchvision.transforms.v2 import RandAugment

    tv = RandAugment(num_ops=2, magnitude=10)
    space = tv._AUGMENTATION_SPACE["Rotate"][0](tv.num_magnitude_bins, 32, 32)
    assert float(space[10]) == pytest.approx(10.0) and float(space[10]) < 30


def test_rotating_an_image_through_the_batch_transform_reaches_30_degrees():
    """A bar image rotated only by the Rotate op: the largest rotation seen is 30 degrees."""
    from PIL import Image

    ra = augreg.rand_augment(1, 10)
    ra.ops = [o for o in ra.ops if o.name == "Rotate"]
    for o in ra.ops:
        o.prob = 1.0
    img = np.zeros((65, 65, 3), np.uint8)
    img[32, :, :] = 255  # a horizontal line through the centre
    seen = []
    random.seed(0)
    for _ in range(20):
        out = np.asarray(ra(Image.fromarray(img)))[..., 0] > 128
        ys, xs = np.nonzero(out)
        slope = np.polyfit(xs - 32, ys - 32, 1)[0]
        seen.append(abs(np.degrees(np.arctan(slope))))
    assert max(seen) == pytest.approx(30.0, abs=1.5)


def test_augreg_names_are_big_vision_settings_and_recipes():
    assert augreg.SETTINGS["light2"] == augreg.Setting((2, 10), 0.2)
    assert augreg.SETTINGS["medium2"] == augreg.Setting((2, 15), 0.5)
    assert augreg.SETTINGS["strong2"] == augreg.Setting((2, 20), 0.8)
    assert augreg.SETTINGS["light1"] == augreg.Setting((2, 0), 0.0)
    for name in ("light1", "light2", "medium1", "medium2", "strong1", "strong2"):
        r = aug.RECIPES[aug.recipe_name(name)]
        assert r.resized_crop and r.flip and r.randaug == augreg.SETTINGS[name].randaug
    assert aug.recipe_name("cifar") == "cifar" and aug.recipe_name("inception") == "inception"


def test_augreg_means_the_papers_default_for_the_model():
    assert augreg.resolve("augreg", "ViT-B/16") == ("medium2", (0.1, 0.1))
    assert augreg.resolve("augreg", "ViT-Ti/16") == ("light1", (0.0, 0.0))
    assert augreg.resolve("light2", "ViT-B/16") == ("light2", None)
    with pytest.raises(ConfigError, match="set data.augment to one of light1"):
        augreg.resolve("augreg", "R50x1")


def test_randaugment_is_seeded_and_leaves_the_global_random_state_alone():
    x = torch.randint(0, 256, (6, 3, 24, 24)).float()
    random.seed(5)
    np.random.seed(5)
    before = (random.random(), np.random.rand())
    random.seed(5)
    np.random.seed(5)
    a = augreg.randaugment(x, 2, 10, torch.Generator().manual_seed(1), 6, slice(0, 6))
    after = (random.random(), np.random.rand())
    b = augreg.randaugment(x[2:], 2, 10, torch.Generator().manual_seed(1), 6, slice(2, 6))
    assert before == after
    assert torch.equal(a[2:], b)  # a rank's slice sees what one process sees
    assert not torch.equal(a, x)


def test_dropout_and_drop_path_reach_the_vit_where_the_paper_puts_them():
    m = models.build_model(OmegaConf.create({"name": "vit_micro", "patch_size": 8,
                                             "drop_rate": 0.1, "drop_path_rate": 0.2}), 10, 32, 3)
    assert m.pos_drop.p == 0.1 and m.blocks[0].attn.proj_drop.p == 0.1
    assert m.blocks[0].mlp.drop1.p == 0.1 and m.blocks[0].mlp.drop2.p == 0.1
    assert m.head_drop.p == 0.0  # vision_transformer: no dropout on the head
    assert m.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)


def test_a_named_augreg_run_records_its_settings_and_its_regularisation(run_cli):
    code, rdir = run_cli("data.augment=light2", "train.dropout=0.1", "train.drop_path=0.1")
    assert code == 0
    row = results.load_rows(rdir)[0][0]
    assert row["augment"] == "light2" and row["randaug"] == "2,10" and row["mixup_alpha"] == 0.2
    assert row["drop_rate"] == 0.1 and row["drop_path_rate"] == 0.1
    assert row["config"]["train"]["dropout"] == 0.1
