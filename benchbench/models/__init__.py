"""Model builder: a conf/model/ node -> its family's row in FAMILIES -> a timm nn.Module.

Every model is built from timm's own classes (VisionTransformer, ResNetV2, HybridEmbed);
nothing here re-implements a layer. The sizes live in `specs`, one module per family builds,
names and checks its models (`vit`, `bit`, `hybrid`, `timm_arch`), and this module only
looks the family up: adding a family is a FAMILIES entry, MODELS entries and conf/model/ files.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from benchbench.errors import ConfigError, unknown_name
from benchbench.families import FAMILIES, Family, resolve
from benchbench.models.bit import build_bit
from benchbench.models.hybrid import HYBRID_PATCHES, build_hybrid, hybrid_stages
from benchbench.models.specs import (
    BIT_CHANNELS,
    MICRO_CHANNELS,
    MICRO_STEM,
    MODELS,
    RESNET_BLOCKS,
    VIT_SIZES,
    ModelSpec,
    ViTSize,
)
from benchbench.models.timm_arch import build_timm
from benchbench.models.vit import add_hidden_head, build_vit, check_patch, drop_hidden_head
from benchbench.registry import cfg_get as _cfg_get

__all__ = [
    "BIT_CHANNELS", "HYBRID_PATCHES", "MICRO_CHANNELS", "MICRO_STEM", "MODELS", "RESNET_BLOCKS",
    "VIT_SIZES", "ModelSpec", "ViTSize", "build_bit", "build_hybrid", "build_model", "build_timm",
    "build_vit", "count_params", "decode_variant", "drop_hidden_head", "family_of", "features",
    "has_patch",
    "hybrid_stages", "paper_name", "patch_size_of", "spec_of", "validate",
]

HIDDEN_HEAD_FAMILIES = ("vit", "hybrid")  # the paper's tanh pre-logits layer is ViT's

_VARIANT_RE = re.compile(
    r"^(?:R(?P<rdepth>\d+)(?:x(?P<rwidth>\d+))?)?(?P<plus>\+)?"
    r"(?:ViT-(?P<vit>Ti|S|B|L|H)/(?P<patch>\d+))?$"
)


def decode_variant(variant: str) -> tuple[str, int | None]:
    """Paper name -> (registry key, patch size): "ViT-B/16" -> ("vit_b", 16), "R50x1" ->
    ("bit_r50x1", None), "R50+ViT-B/16" (or "R50x1+ViT-B/16") -> ("hybrid_r50_vit_b", 16).
    Study files name models this way (like big_vision's decode_variant("S/16"))."""
    m = _VARIANT_RE.match(variant.strip())
    if m and m["vit"] and not m["rdepth"] and not m["plus"]:
        return f"vit_{m['vit'].lower()}", int(m["patch"])
    if m and m["rdepth"] and not m["plus"] and not m["vit"]:
        key = f"bit_r{m['rdepth']}x{m['rwidth'] or 1}"
    elif m and m["rdepth"] and m["plus"] and m["vit"] and (m["rwidth"] in (None, "1")):
        key = f"hybrid_r{m['rdepth']}_vit_{m['vit'].lower()}"
    else:
        key = ""
    if key in MODELS:
        return key, (int(m["patch"]) if m["patch"] else None)
    valid = [paper_name({"name": k}) for k in MODELS.names() if k not in ("timm",)]
    raise unknown_name("model variant", variant, valid,
                       "Write it as the paper: ViT-B/16, R50x1, R50+ViT-B/16.")


def spec_of(cfg: Any) -> ModelSpec:
    variant = _cfg_get(cfg, "variant")
    if variant:
        return MODELS.get(decode_variant(variant)[0])
    return MODELS.get(_cfg_get(cfg, "name"))


def _family(spec: ModelSpec) -> Family:
    return FAMILIES.get(spec.family)


def has_patch(name: str) -> bool:
    """Whether model `name` (a MODELS key) has a patch size (ViT, hybrid) or not (CNNs)."""
    return _family(MODELS.get(name)).has_patch


def patch_size_of(cfg: Any) -> int | None:
    """The effective patch size (None for models without one)."""
    spec = spec_of(cfg)
    if not _family(spec).has_patch:
        return None
    variant = _cfg_get(cfg, "variant")
    if variant and decode_variant(variant)[1] is not None:
        return decode_variant(variant)[1]
    return int(_cfg_get(cfg, "patch_size", spec.patch_size))


def validate(cfg: Any, image_size: int) -> None:
    """Reject impossible combinations before anything is built (names the valid choices)."""
    spec = spec_of(cfg)
    if image_size < 1:
        raise ConfigError(f"data.image_size must be positive, got {image_size}.")
    fam = _family(spec)
    hidden = _cfg_get(cfg, "head_hidden", None)
    if hidden is not None and not isinstance(hidden, bool):
        raise ConfigError(f"model.head_hidden must be true, false or null, got {hidden!r}.")
    if hidden and spec.family not in HIDDEN_HEAD_FAMILIES:
        raise ConfigError(f"model.head_hidden=true is ViT's pre-training head; {paper_name(cfg)} "
                          f"({spec.family}) has none: leave model.head_hidden null.")
    p = patch_size_of(cfg)
    if fam.check is not None:
        resolve(fam.check)(spec, cfg, p, image_size)
    elif p is not None:
        check_patch(cfg, p, image_size)


def paper_name(cfg: Any) -> str:
    """The name the paper uses: ViT-B/16, R50x1, R50+ViT-B/16 (the family's `name`)."""
    spec = spec_of(cfg)
    fam = _family(spec)
    if fam.name is None:
        return str(_cfg_get(cfg, "name"))
    return resolve(fam.name)(spec, cfg, patch_size_of(cfg))


def family_of(cfg: Any) -> str:
    return spec_of(cfg).family


def build_model(cfg: Any, num_classes: int, image_size: int, in_chans: int = 3) -> nn.Module:
    """Build the model of config node `cfg` (conf/model/*.yaml) for the given data shape."""
    validate(cfg, image_size)
    spec = spec_of(cfg)
    model = _family(spec).build(spec, cfg, patch_size_of(cfg), num_classes, image_size, in_chans)
    return add_hidden_head(model) if _cfg_get(cfg, "head_hidden", None) else model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pre-logits features (the input of the classifier head), for few-shot probes."""
    return model.forward_head(model.forward_features(x), pre_logits=True)
