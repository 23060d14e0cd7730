"""The model table: the names users type (`model=vit_b`) -> sizes cited from the papers.

Sizes are data with a source (STYLE habit 2); each entry names its family, whose row in
`benchbench.families.FAMILIES` says how it is built, named and validated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchbench.registry import Registry


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

    family: str  # a key of benchbench.families.FAMILIES: vit | bit | hybrid | resnet | timm
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
