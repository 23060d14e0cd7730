"""AugReg by its names (Steiner et al. 2021, "How to train your ViT", arXiv 2106.10270):
RandAugment on big_vision's scale (timm's implementation) and mixup, plus the paper's
default setting per model.

Sources (read with the search/fetch tools, big_vision commit 0127fb6b, vision_transformer
commit c6de1e53):
  - google-research/big_vision big_vision/configs/vit_i1k.py: RANDAUG_DEF, MIXUP_DEF (the
    same tables in configs/vit_i21k.py) and the per-variant `aug_setting` for ImageNet-1k;
    its docstring: regularization (dropout, stochastic depth) "was shown to help with B/32,
    B/16, L/16 models in the paper (Figure 4)".
  - google-research/vision_transformer README: AugReg checkpoints name their regularization
    do_0.1-sd_0.1 (dropout 0.1, stochastic depth 0.1) or do_0.0-sd_0.0.
  - google-research/big_vision big_vision/pp/archive/autoaugment.py
    distort_image_with_randaugment: 16 ops, each applied with probability U(0.2, 0.8),
    level / 10 scale with no upper clamp (randaug(2, 10) rotates up to 30 degrees, (2, 20) up
    to 60), translate 100 px, fill 128.
AugReg's "none" (inception crop + flip only) is benchbench's `inception`: `none` keeps
meaning no augmentation at all (committed studies use it).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from benchbench.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    randaug: tuple[int, int] | None  # (layers, magnitude) on big_vision's 0-10 level scale
    mixup: float  # Beta(alpha, alpha) of big_vision's mixup `p`


# big_vision configs/vit_i1k.py RANDAUG_DEF / MIXUP_DEF ('light1': "randaug(2,0) Actually not nothing!")
SETTINGS: dict[str, Setting] = {
    "light1": Setting((2, 0), 0.0),
    "light2": Setting((2, 10), 0.2),
    "medium1": Setting((2, 15), 0.2),
    "medium2": Setting((2, 15), 0.5),
    "strong1": Setting((2, 20), 0.5),
    "strong2": Setting((2, 20), 0.8),
}
# big_vision configs/vit_i1k.py aug_setting: the paper's ImageNet-1k choice per model
DEFAULT_BY_MODEL: dict[str, str] = {
    "ViT-Ti/16": "light1", "ViT-S/32": "medium1", "ViT-S/16": "medium2",
    "ViT-B/32": "medium2", "ViT-B/16": "medium2", "ViT-L/16": "medium2",
}
# vit_i1k.py docstring + vision_transformer's do_0.1-sd_0.1: (dropout, stochastic depth)
REG_BY_MODEL: dict[str, tuple[float, float]] = {
    "ViT-B/32": (0.1, 0.1), "ViT-B/16": (0.1, 0.1), "ViT-L/16": (0.1, 0.1),
}
# `augreg` without a model (a bare loader): vit_i1k.py's default variant, B/16
DEFAULT = "medium2"
# big_vision's available_ops, less Cutout (timm has none; it offers random erasing instead)
BIG_VISION_OPS = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                  "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                  "TranslateX", "TranslateY", "SolarizeAdd"]


def resolve(name: str, model: str | None) -> tuple[str, tuple[float, float] | None]:
    """data.augment `augreg` -> the paper's setting for `model` and its (dropout, drop path);
    any other name is returned as is, with no regularization of its own."""
    if name != "augreg":
        return name, None
    if model not in DEFAULT_BY_MODEL:
        raise ConfigError(f"data.augment=augreg: the paper gives no AugReg default for {model} "
                          f"(it has {', '.join(DEFAULT_BY_MODEL)}); set data.augment to one of "
                          f"{', '.join(SETTINGS)}.")
    return DEFAULT_BY_MODEL[model], REG_BY_MODEL.get(model, (0.0, 0.0))


def rand_augment(layers: int, magnitude: int):
    """timm's RandAugment at big_vision's settings: level/10 scale unclamped up to the
    magnitude (mmax), no magnitude noise (mstd0), probability 0.5 per op (big_vision's
    U(0.2, 0.8) mean), translate 100 px, grey 128 fill, nearest (tfa.image's default)."""
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    hparams = {"translate_const": 100, "img_mean": (128, 128, 128),
               "interpolation": Image.NEAREST}
    return rand_augment_transform(f"rand-n{layers}-m{magnitude}-mstd0-mmax{max(magnitude, 10)}",
                                  hparams, transforms=list(BIG_VISION_OPS))


def randaugment(x: torch.Tensor, layers: int, magnitude: int, g: torch.Generator,
                global_n: int, sl: slice) -> torch.Tensor:
    """RandAugment on a float (B, C, H, W) batch in [0, 255], per image through PIL on the
    CPU (timm's ops). Each image's draws come from a seed drawn from `g` for the whole global
    batch, so a resumed run and every DDP rank see the same images; Python's and NumPy's
    global random states are restored afterwards."""
    from PIL import Image

    seeds = torch.randint(0, 2**31 - 1, (global_n,), generator=g, device=x.device)[sl].tolist()
    ra = rand_augment(layers, magnitude)
    img = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    grey = img.shape[-1] == 1
    out = np.empty_like(img)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        for i, s in enumerate(seeds):
            random.seed(s)
            np.random.seed(s)
            pil = Image.fromarray(img[i, ..., 0] if grey else img[i]).convert("RGB")
            a = np.asarray(ra(pil))
            out[i] = a[..., :1] if grey else a
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, torch.float32)
