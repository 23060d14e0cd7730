"""Model registry: the names users type (`model=vit_b`) -> timm modules with paper names.

Sizes are data with a source (STYLE habit 2). Every model is built from timm's own classes
(VisionTransformer, ResNetV2, HybridEmbed); nothing here re-implements a layer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from benchbench.errors import ConfigError, unknown_name
from benchbench.registry import Registry
from benchbench.registry import cfg_get as _cfg_get


@dataclass(frozen=True)
class ViTSize:
    """One row of the ViT size table."""

    tag: str  # the letter in "ViT-B/16"
    depth: int
    width: int
    mlp: int
    heads: int


# Dosovitskiy et al. 2021, Table 1 (B, L, H); Touvron et al. 2021 (DeiT), Table 1 (Ti, S).
# "micro" is ours: small enough that a 2-core CPU trains it on 32 px images in seconds.
VIT_SIZES: dict[str, ViTSize] = {
    "Ti": ViTSize("Ti", depth=12, width=192, mlp=768, heads=3),
    "S": ViTSize("S", depth=12, width=384, mlp=1536, heads=6),
    "B": ViTSize("B", depth=12, width=768, mlp=3072, heads=12),
    "L": ViTSize("L", depth=24, width=1024, mlp=4096, heads=16),
    "H": ViTSize("H", depth=32, width=1280, mlp=5120, heads=16),
    "micro": ViTSize("micro", depth=4, width=64, mlp=128, heads=4),
    # The small ViT of the Keras/PyTorch "ViT from scratch on CIFAR-10" articles this project
    # started from (dim 128, depth 3, heads 2, MLP 256): sweeps/seed_vit_cifar10.yaml.
    "seed": ViTSize("seed", depth=3, width=128, mlp=256, heads=2),
}

# Blocks per stage of the (pre-activation, bottleneck) ResNet depths used by BiT
# (Kolesnikov et al. 2020, "Big Transfer", section 3.1; He et al. 2016, Table 1).
RESNET_BLOCKS: dict[str, tuple[int, ...]] = {
    "26": (2, 2, 2, 2),
    "50": (3, 4, 6, 3),
    "101": (3, 4, 23, 3),
    "152": (3, 8, 36, 3),
    "200": (3, 24, 36, 3),
    "micro": (1, 1, 1, 1),
}
# BiT channel widths for width factor 1 (output channels of each stage; bottleneck = 1/4).
BIT_CHANNELS = (256, 512, 1024, 2048)
MICRO_CHANNELS = (64, 128, 256, 512)  # ours; bottleneck widths 16..128, GroupNorm(8) fits
MICRO_STEM = 32


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registry entry. `patch_size` is the default patch (ViT) or the
    backbone's total downsampling (hybrids, the trailing number of "R50+ViT-B/16")."""

    family: str  # vit | bit | hybrid | resnet | timm
    vit: str | None = None  # key of VIT_SIZES
    resnet: str | None = None  # key of RESNET_BLOCKS
    width_factor: int = 1
    patch_size: int | None = None
    timm_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


MODELS: Registry[ModelSpec] = Registry("model", "Pick one with model=<name> (files in conf/model/).")
for _k, _tag, _p in [("ti", "Ti", 16), ("s", "S", 16), ("b", "B", 16), ("l", "L", 16),
                     ("h", "H", 14), ("micro", "micro", 8), ("seed", "seed", 8)]:
    MODELS.register(f"vit_{_k}", ModelSpec("vit", vit=_tag, patch_size=_p))
# BiT sizes of the paper's Figure 5 / Table 6 (plus R50x3 from the BiT paper).
for _d, _w in [(50, 1), (50, 2), (50, 3), (101, 1), (101, 3), (152, 1), (152, 2), (152, 4), (200, 3)]:
    MODELS.register(f"bit_r{_d}x{_w}", ModelSpec("bit", resnet=str(_d), width_factor=_w))
MODELS.register("bit_micro", ModelSpec("bit", resnet="micro"))
# Hybrids (paper section 3.1 "Hybrid Architecture"; timm vit_base_r50_s16_224 & co.).
MODELS.register("hybrid_r50_vit_b", ModelSpec("hybrid", vit="B", resnet="50", patch_size=16))
MODELS.register("hybrid_r50_vit_l", ModelSpec("hybrid", vit="L", resnet="50", patch_size=32))
MODELS.register("hybrid_r26_vit_s", ModelSpec("hybrid", vit="S", resnet="26", patch_size=32))
MODELS.register("hybrid_micro", ModelSpec("hybrid", vit="micro", resnet="micro", patch_size=8))
# Plain torchvision-style ResNet-50 (timm), for side-by-side timing with timm's benchmark.
MODELS.register("resnet50", ModelSpec("resnet", timm_name="resnet50"))
# Escape hatch: any timm architecture by name (model=timm model.timm_name=convnext_tiny).
MODELS.register("timm", ModelSpec("timm"))


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


def patch_size_of(cfg: Any) -> int | None:
    """The effective patch size (None for models without one)."""
    spec = spec_of(cfg)
    if spec.family not in ("vit", "hybrid"):
        return None
    variant = _cfg_get(cfg, "variant")
    if variant and decode_variant(variant)[1] is not None:
        return decode_variant(variant)[1]
    return int(_cfg_get(cfg, "patch_size", spec.patch_size))


def hybrid_stages(resnet: str, patch_size: int) -> tuple[int, ...]:
    """Blocks per stage of a hybrid backbone with total downsampling `patch_size`.

    The stem downsamples 4x and each stage after the first 2x, so /2^(k+2) keeps k stages;
    the remaining blocks are folded into the last kept stage, as the paper does for
    R50+ViT-B/16: (3, 4, 6, 3) -> (3, 4, 9).
    """
    blocks = RESNET_BLOCKS[resnet]
    k = {4: 1, 8: 2, 16: 3, 32: 4}[patch_size]
    return tuple(blocks[: k - 1]) + (sum(blocks[k - 1 :]),)


HYBRID_PATCHES = (4, 8, 16, 32)  # stem /4, then x2 per extra stage


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def validate(cfg: Any, image_size: int) -> None:
    """Reject impossible combinations before anything is built (names the valid choices)."""
    spec = spec_of(cfg)
    if image_size < 1:
        raise ConfigError(f"data.image_size must be positive, got {image_size}.")
    if spec.family == "timm" and not _cfg_get(cfg, "timm_name"):
        raise ConfigError("model=timm needs model.timm_name=<any timm architecture>.")
    p = patch_size_of(cfg)
    if p is None:
        return
    if spec.family == "hybrid" and p not in HYBRID_PATCHES:
        raise ConfigError(
            f"a hybrid's patch size is its ResNet's downsampling: 4, 8, 16 or 32, not {p}. "
            f"Set model.patch_size=16 (R50+ViT-B/16) or 32."
        )
    if p > image_size:  # even padded, the model would see one patch that is mostly padding
        what = "downsampling" if spec.family == "hybrid" else "patch size"
        valid = [d for d in _divisors(image_size) if spec.family == "vit" or d in HYBRID_PATCHES]
        raise ConfigError(
            f"{what} {p} is larger than the {image_size} px image: set data.image_size to at "
            f"least {p} (a multiple of it), or model.patch_size to one of "
            f"{', '.join(map(str, valid)) or 'none'}."
        )
    if p >= 1 and image_size % p and _cfg_get(cfg, "pad_to_patch", False):
        return  # timm pads the input up to a multiple of the patch (tokens = ceil(H/P)^2)
    if p < 1 or image_size % p:
        valid = [d for d in _divisors(image_size) if spec.family == "vit" or d in HYBRID_PATCHES]
        mult = ((image_size + p - 1) // p) * p if p >= 1 else None
        raise ConfigError(
            f"patch size {p} does not divide image size {image_size}: "
            f"valid model.patch_size for {image_size} px: {', '.join(map(str, valid)) or 'none'}; "
            f"or set data.image_size to a multiple of {p}" + (f" (e.g. {mult})." if mult else ".")
        )


def paper_name(cfg: Any) -> str:
    """The name the paper uses: ViT-B/16, R50x1, R50+ViT-B/16."""
    spec = spec_of(cfg)
    p = patch_size_of(cfg)
    if spec.family == "vit":
        return f"ViT-{spec.vit}/{p}"
    if spec.family == "bit":
        return "R-micro" if spec.resnet == "micro" else f"R{spec.resnet}x{spec.width_factor}"
    if spec.family == "hybrid":
        res = "R-micro" if spec.resnet == "micro" else f"R{spec.resnet}"
        return f"{res}+ViT-{spec.vit}/{p}"
    if spec.family == "resnet":
        return "ResNet-50"
    return str(_cfg_get(cfg, "timm_name"))


def family_of(cfg: Any) -> str:
    return spec_of(cfg).family


def _vit_kwargs(size: ViTSize, cfg: Any) -> dict[str, Any]:
    return dict(
        embed_dim=size.width,
        depth=size.depth,
        num_heads=size.heads,
        mlp_ratio=size.mlp / size.width,
        class_token=True,  # paper: [class] token -> LayerNorm -> linear head
        global_pool="token",
        drop_rate=float(_cfg_get(cfg, "drop_rate", 0.0)),
        drop_path_rate=float(_cfg_get(cfg, "drop_path_rate", 0.0)),
    )


def _resnet_backbone_kwargs(resnet: str, width_factor: int) -> dict[str, Any]:
    if resnet == "micro":
        return dict(
            channels=MICRO_CHANNELS,
            stem_chs=MICRO_STEM,
            norm_layer=partial(_group_norm_act(), num_groups=8),
        )
    return dict(channels=BIT_CHANNELS, width_factor=width_factor)


def _group_norm_act():
    from timm.layers import GroupNormAct

    return GroupNormAct


def build_model(cfg: Any, num_classes: int, image_size: int, in_chans: int = 3) -> nn.Module:
    """Build the model of config node `cfg` (conf/model/*.yaml) for the given data shape."""
    from timm.layers import HybridEmbed, PatchEmbed, StdConv2d, StdConv2dSame
    from timm.models.resnetv2 import ResNetV2
    from timm.models.vision_transformer import VisionTransformer

    validate(cfg, image_size)
    spec = spec_of(cfg)
    p = patch_size_of(cfg)
    if spec.family == "vit":
        pad = bool(_cfg_get(cfg, "pad_to_patch", False))
        return VisionTransformer(
            img_size=-(-image_size // p) * p if pad else image_size,  # grid of the padded input
            patch_size=p,
            dynamic_img_pad=pad,
            **({"embed_layer": partial(PatchEmbed, strict_img_size=False)} if pad else {}),
            in_chans=in_chans,
            num_classes=num_classes,
            **_vit_kwargs(VIT_SIZES[spec.vit], cfg),
        )
    if spec.family == "bit":
        # BiT: pre-activation ResNetV2, GroupNorm(32) + weight-standardized convs (StdConv2d).
        return ResNetV2(
            layers=list(RESNET_BLOCKS[spec.resnet]),
            num_classes=num_classes,
            in_chans=in_chans,
            stem_type="fixed",
            conv_layer=partial(StdConv2d, eps=1e-8),
            drop_rate=float(_cfg_get(cfg, "drop_rate", 0.0)),
            drop_path_rate=float(_cfg_get(cfg, "drop_path_rate", 0.0)),
            **_resnet_backbone_kwargs(spec.resnet, spec.width_factor),
        )
    if spec.family == "hybrid":
        # Non-pre-activation ResNetV2 stages with 'same' padding feed the ViT (patch size 1
        # on the feature map), as timm's vit_base_r50_s16_224.
        backbone = ResNetV2(
            layers=list(hybrid_stages(spec.resnet, p)),
            num_classes=0,
            global_pool="",
            in_chans=in_chans,
            preact=False,
            stem_type="same",
            conv_layer=partial(StdConv2dSame, eps=1e-8),
            **_resnet_backbone_kwargs(spec.resnet, 1),
        )
        return VisionTransformer(
            img_size=image_size,
            patch_size=1,
            in_chans=in_chans,
            num_classes=num_classes,
            embed_layer=partial(HybridEmbed, backbone=backbone),
            **_vit_kwargs(VIT_SIZES[spec.vit], cfg),
        )
    import timm

    name = spec.timm_name or _cfg_get(cfg, "timm_name")
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
            drop_rate=float(_cfg_get(cfg, "drop_rate", 0.0)),
        )
    except RuntimeError as e:  # timm: "Unknown model (...)"
        raise ConfigError(f"timm does not know model.timm_name={name!r}: {e}") from None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pre-logits features (the input of the classifier head), for few-shot probes."""
    return model.forward_head(model.forward_features(x), pre_logits=True)
