"""Model registry: every entry builds, counts match the paper / timm, bad combos rejected."""
from __future__ import annotations

import pytest
import torch
from conftest import REPO
from omegaconf import OmegaConf

from benchbench import models
from benchbench.errors import ConfigError


def cfg(name, patch=None, **kw):
    return OmegaConf.create({"name": name, "patch_size": patch, **kw})


def n_params(name, patch=None, image=224, classes=1000):
    with torch.device("meta"):
        return models.count_params(models.build_model(cfg(name, patch), classes, image))


def test_every_registry_key_has_a_config_file_and_back():
    files = {p.stem for p in (REPO / "conf" / "model").glob("*.yaml")}
    assert files == set(models.MODELS.names())
    for f in files:
        assert OmegaConf.load(REPO / "conf" / "model" / f"{f}.yaml").name == f


# Paper Table 1 (ViT-B/L/H), DeiT (Ti/S) and timm's BiT/hybrid parameter counts, 1000 classes.
@pytest.mark.parametrize("name,patch,expected,tol", [
    ("vit_ti", 16, 5.7e6, 0.01), ("vit_s", 16, 22.1e6, 0.01), ("vit_b", 16, 86.6e6, 0.001),
    ("vit_l", 16, 304.3e6, 0.001), ("vit_h", 14, 632e6, 0.001),
    ("bit_r50x1", None, 25.55e6, 0.001), ("bit_r101x1", None, 44.54e6, 0.001),
    ("bit_r50x3", None, 217.3e6, 0.001), ("bit_r152x2", None, 236.3e6, 0.001),
    ("bit_r101x3", None, 387.9e6, 0.001), ("bit_r152x4", None, 936.5e6, 0.001),
])
def test_param_counts_match_paper_and_timm(name, patch, expected, tol):
    assert n_params(name, patch) == pytest.approx(expected, rel=tol)


@pytest.mark.parametrize("ours,timm_name,classes", [
    ("bit_r50x1", "resnetv2_50x1_bit", 1000), ("resnet50", "resnet50", 1000),
    ("hybrid_r50_vit_b", "vit_base_r50_s16_224", 0),  # timm's hybrid has no head by default
    ("hybrid_r26_vit_s", "vit_small_r26_s32_224", 1000),
])
def test_params_equal_timm_reference_models(ours, timm_name, classes):
    import timm

    with torch.device("meta"):
        ref = timm.create_model(timm_name, num_classes=classes)
    p = models.patch_size_of(cfg(ours))
    assert n_params(ours, p, classes=classes) == models.count_params(ref)


def test_hybrid_folds_stage_four_into_three_as_the_paper():
    assert models.hybrid_stages("50", 16) == (3, 4, 9)
    assert models.hybrid_stages("50", 32) == (3, 4, 6, 3)
    m = models.build_model(cfg("hybrid_micro", 8), 10, 32)
    assert m.patch_embed.num_patches == (32 // 8) ** 2


@pytest.mark.parametrize("name,patch,image,expected", [
    ("vit_b", 16, 224, "ViT-B/16"), ("vit_l", 32, 224, "ViT-L/32"), ("vit_h", 14, 224, "ViT-H/14"),
    ("bit_r50x1", None, 224, "R50x1"), ("bit_r152x4", None, 224, "R152x4"),
    ("hybrid_r50_vit_b", 16, 224, "R50+ViT-B/16"), ("hybrid_r50_vit_l", 32, 224, "R50+ViT-L/32"),
    ("vit_micro", 4, 32, "ViT-micro/4"), ("bit_micro", None, 32, "R-micro"),
])
def test_paper_names(name, patch, image, expected):
    assert models.paper_name(cfg(name, patch)) == expected


@pytest.mark.parametrize("name,patch", [("vit_micro", 4), ("vit_micro", 8), ("bit_micro", None),
                                        ("hybrid_micro", 4), ("hybrid_micro", 8)])
def test_micro_models_forward_backward_on_cpu(name, patch):
    m = models.build_model(cfg(name, patch), 10, 32, in_chans=1)
    y = m(torch.randn(2, 1, 32, 32))
    assert y.shape == (2, 10)
    y.sum().backward()
    f = models.features(m, torch.randn(2, 1, 32, 32))
    assert f.ndim == 2 and f.shape[0] == 2


def test_vit_any_patch_and_image_size():
    m = models.build_model(cfg("vit_micro", 7), 3, 28)
    assert m(torch.randn(1, 3, 28, 28)).shape == (1, 3)
    assert m.patch_embed.num_patches == 16


def test_impossible_patch_is_rejected_before_building_naming_valid_choices():
    with pytest.raises(ConfigError, match=r"patch size 16 does not divide image size 30.*1, 2, 3, 5, 6, 10, 15, 30.*multiple of 16 \(e.g. 32\)"):
        models.validate(cfg("vit_b", 16), 30)
    with pytest.raises(ConfigError, match="4, 8, 16 or 32"):
        models.validate(cfg("hybrid_r50_vit_b", 14), 224)


def test_unknown_model_lists_valid_names_closest_first():
    with pytest.raises(ConfigError, match=r"unknown model 'vit_bb'\. Did you mean 'vit_b'\?"):
        models.MODELS.get("vit_bb")


def test_timm_escape_hatch():
    m = models.build_model(cfg("timm", timm_name="resnet18"), 10, 32)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="timm_name"):
        models.validate(cfg("timm"), 32)
