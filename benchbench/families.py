"""One table of model families: label, plot order and style, patch or not, layout, builder.

Adding a family is one `register` call here (or in a plugin module), its model entries in
`benchbench.models.MODELS` and its conf/model/ files; the model builder, the report and the
plots read only this table (STYLE habit 1, torchtitan's `configs = {name: fn}` tables).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchbench.registry import Registry

# A function, or where it lives as "module:function" (imported on first use, big_vision style).
Ref = str | Callable[..., Any]


def resolve(ref: Ref) -> Callable[..., Any]:
    if callable(ref):
        return ref
    module, _, fn = ref.partition(":")
    return getattr(importlib.import_module(module), fn)


@dataclass(frozen=True)
class Family:
    """What the rest of benchbench needs to know about one model family."""

    key: str               # the row's `family` column: vit | hybrid | bit | resnet | timm
    label: str             # how reports and plots name it
    color: str             # matplotlib colour of its points and frontier
    marker: str
    cmap: str              # colormap for the shades of its models (by params)
    has_patch: bool        # a patch size changes the model (ViT, hybrid); CNNs have none
    conv: bool             # convolutional layout: channels_last helps on CUDA
    # (spec, cfg, patch, num_classes, image_size, in_chans) -> nn.Module
    builder: Ref
    # (spec, cfg, patch) -> the paper's name of the model; None: the model's registry key
    name: Ref | None = None
    # (spec, cfg, patch, image_size) -> None, raising ConfigError; None: any patch that divides
    check: Ref | None = None

    def build(self, *args: Any, **kwargs: Any) -> Any:
        """Call the family's builder (imported lazily, big_vision style)."""
        return resolve(self.builder)(*args, **kwargs)


FAMILIES: Registry[Family] = Registry("model family",
                                      "Register it in benchbench/families.py (FAMILIES).")

# Registration order is plot and table order (ViT first, as the paper's figures).
_M = "benchbench.models"
FAMILIES.register("vit", Family(
    "vit", "ViT", "tab:blue", "o", "Blues", has_patch=True, conv=False,
    builder=f"{_M}.vit:build_vit", name=f"{_M}.vit:vit_name"))
FAMILIES.register("hybrid", Family(
    "hybrid", "Hybrid", "tab:green", "^", "Greens", has_patch=True, conv=True,
    builder=f"{_M}.hybrid:build_hybrid", name=f"{_M}.hybrid:hybrid_name",
    check=f"{_M}.hybrid:check_hybrid"))
FAMILIES.register("bit", Family(
    "bit", "BiT", "tab:orange", "s", "Oranges", has_patch=False, conv=True,
    builder=f"{_M}.bit:build_bit", name=f"{_M}.bit:bit_name"))
FAMILIES.register("resnet", Family(
    "resnet", "ResNet", "tab:red", "D", "Reds", has_patch=False, conv=True,
    builder=f"{_M}.timm_arch:build_timm", name=f"{_M}.timm_arch:resnet_name"))
FAMILIES.register("timm", Family(
    "timm", "timm", "tab:purple", "v", "Purples", has_patch=False, conv=False,
    builder=f"{_M}.timm_arch:build_timm", name=f"{_M}.timm_arch:timm_name",
    check=f"{_M}.timm_arch:check_timm"))

# A family the table does not know (rows from a newer version, or a plugin not loaded).
UNKNOWN_STYLE = ("tab:gray", "x", "Greys")


def order() -> list[str]:
    """Family keys in plot/table order (registration order)."""
    return FAMILIES.in_order()


def label(key: str) -> str:
    return FAMILIES.get(key).label if key in FAMILIES else str(key)


def sort_key(key: str) -> tuple[int, str]:
    keys = order()
    return (keys.index(key) if key in keys else len(keys), str(key))


def style(key: str) -> tuple[str, str, str]:
    """(colour, marker, colormap) of a family; grey crosses for one the table lacks."""
    if key in FAMILIES:
        f = FAMILIES.get(key)
        return f.color, f.marker, f.cmap
    return UNKNOWN_STYLE
