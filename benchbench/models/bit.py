"""The BiT family: pre-activation ResNetV2 with GroupNorm and weight-standardized convs."""
from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from benchbench.models.specs import (
    BIT_CHANNELS,
    MICRO_CHANNELS,
    MICRO_STEM,
    RESNET_BLOCKS,
    ModelSpec,
)
from benchbench.registry import cfg_get as _cfg_get


def resnet_backbone_kwargs(resnet: str, width_factor: int) -> dict[str, Any]:
    if resnet == "micro":
        from timm.layers import GroupNormAct

        return dict(
            channels=MICRO_CHANNELS,
            stem_chs=MICRO_STEM,
            norm_layer=partial(GroupNormAct, num_groups=8),
        )
    return dict(channels=BIT_CHANNELS, width_factor=width_factor)


def build_bit(spec: ModelSpec, cfg: Any, p: None, num_classes: int, image_size: int,
              in_chans: int) -> nn.Module:
    from timm.layers import StdConv2d
    from timm.models.resnetv2 import ResNetV2

    # BiT: pre-activation ResNetV2, GroupNorm(32) + weight-standardized convs (StdConv2d).
    return ResNetV2(
        layers=list(RESNET_BLOCKS[spec.resnet]),
        num_classes=num_classes,
        in_chans=in_chans,
        stem_type="fixed",
        conv_layer=partial(StdConv2d, eps=1e-8),
        drop_rate=float(_cfg_get(cfg, "drop_rate", 0.0)),
        drop_path_rate=float(_cfg_get(cfg, "drop_path_rate", 0.0)),
        **resnet_backbone_kwargs(spec.resnet, spec.width_factor),
    )


def bit_name(spec: ModelSpec, cfg: Any, p: None) -> str:
    return "R-micro" if spec.resnet == "micro" else f"R{spec.resnet}x{spec.width_factor}"
