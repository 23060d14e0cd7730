"""Families built by a timm architecture name: the ResNet-50 baseline and `model=timm`."""
from __future__ import annotations

from typing import Any

from torch import nn

from benchbench.errors import ConfigError
from benchbench.models.specs import ModelSpec
from benchbench.registry import cfg_get as _cfg_get


def build_timm(spec: ModelSpec, cfg: Any, p: None, num_classes: int, image_size: int,
               in_chans: int) -> nn.Module:
    import timm

    name = spec.timm_name or _cfg_get(cfg, "timm_name")
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
            drop_rate=float(_cfg_get(cfg, "drop_rate", 0.0)),
        )
    except RuntimeError as e:  # timm: "Unknown model (...)"
        raise ConfigError(f"timm does not know model.timm_name={name!r}: {e}") from None


def check_timm(spec: ModelSpec, cfg: Any, p: None, image_size: int) -> None:
    if not spec.timm_name and not _cfg_get(cfg, "timm_name"):
        raise ConfigError("model=timm needs model.timm_name=<any timm architecture>.")


def resnet_name(spec: ModelSpec, cfg: Any, p: None) -> str:
    return "ResNet-" + str(spec.timm_name).removeprefix("resnet")  # resnet50 -> ResNet-50


def timm_name(spec: ModelSpec, cfg: Any, p: None) -> str:
    return str(spec.timm_name or _cfg_get(cfg, "timm_name"))
