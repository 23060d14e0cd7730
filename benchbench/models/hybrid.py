"""The hybrid family: a ResNetV2 backbone whose feature map feeds a ViT (paper section 3.1)."""
from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from benchbench.errors import ConfigError
from benchbench.models.bit import resnet_backbone_kwargs
from benchbench.models.specs import RESNET_BLOCKS, VIT_SIZES, ModelSpec
from benchbench.models.vit import check_patch, vit_kwargs

HYBRID_PATCHES = (4, 8, 16, 32)  # stem /4, then x2 per extra stage


def hybrid_stages(resnet: str, patch_size: int) -> tuple[int, ...]:
    """Blocks per stage of a hybrid backbone with total downsampling `patch_size`.

    The stem downsamples 4x and each stage after the first 2x, so /2^(k+2) keeps k stages;
    the remaining blocks are folded into the last kept stage, as the paper does for
    R50+ViT-B/16: (3, 4, 6, 3) -> (3, 4, 9).
    """
    blocks = RESNET_BLOCKS[resnet]
    k = {4: 1, 8: 2, 16: 3, 32: 4}[patch_size]
    return tuple(blocks[: k - 1]) + (sum(blocks[k - 1 :]),)


def check_hybrid(spec: ModelSpec, cfg: Any, p: int, image_size: int) -> None:
    if p not in HYBRID_PATCHES:
        # name this model's own choices (not another hybrid's), those that fit the image first
        fits = [d for d in HYBRID_PATCHES if d <= image_size and image_size % d == 0]
        default = spec.patch_size if spec.patch_size in fits else (fits or [None])[-1]
        named = f" ({hybrid_name(spec, cfg, default)})" if default else ""
        raise ConfigError(
            f"a hybrid's patch size is its ResNet's downsampling: 4, 8, 16 or 32, not {p}. "
            f"Set model.patch_size={default or 'one of 4, 8, 16, 32'}{named}; for "
            f"{image_size} px images {hybrid_name(spec, cfg, p).rsplit('/', 1)[0]} takes "
            f"{', '.join(map(str, fits)) or 'none of them: raise data.image_size'}."
        )
    check_patch(cfg, p, image_size, allowed=HYBRID_PATCHES, what="downsampling")


def build_hybrid(spec: ModelSpec, cfg: Any, p: int, num_classes: int, image_size: int,
                 in_chans: int) -> nn.Module:
    from timm.layers import HybridEmbed, StdConv2dSame
    from timm.models.resnetv2 import ResNetV2
    from timm.models.vision_transformer import VisionTransformer

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
        **resnet_backbone_kwargs(spec.resnet, 1),
    )
    return VisionTransformer(
        img_size=image_size,
        patch_size=1,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_layer=partial(HybridEmbed, backbone=backbone),
        **vit_kwargs(VIT_SIZES[spec.vit], cfg),
    )


def hybrid_name(spec: ModelSpec, cfg: Any, p: int) -> str:
    res = "R-micro" if spec.resnet == "micro" else f"R{spec.resnet}"
    return f"{res}+ViT-{spec.vit}/{p}"
