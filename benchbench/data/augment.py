"""Training augmentation as named recipes (data.augment), done on batches on the device, with
randomness drawn from (seed, step) so a resumed run sees the same images.

  none       no augmentation
  cifar      reflect-pad by image_size // 8, random crop, horizontal flip (data.augment=true)
  inception  random resized crop + flip: the paper's pre-processing (Szegedy et al. 2015, as
             in big_vision's inception_crop). Folders and shards crop the whole decoded image
             in the decode workers (data.decode.decode_crop: area 5-100%, big_vision's); the
             small in-memory sets keep this module's batched crop (area 8-100%, clamped box)
  light1 ... strong2  inception + RandAugment(2, m) + Mixup(alpha): AugReg's settings by name
             (Steiner et al. 2021; values and sources in benchbench.data.augreg)
  augreg     the paper's AugReg setting for the model (big_vision configs/vit_i1k.py)
Evaluation takes the centre `data.crop_pct` of each image (null: the whole image).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchbench.data import augreg
from benchbench.errors import unknown_name


@dataclass(frozen=True)
class Recipe:
    pad_crop: bool = False  # cifar
    resized_crop: bool = False  # inception
    flip: bool = False
    randaug: tuple[int, int] | None = None  # (ops per image, magnitude on big_vision's 0-10 scale)
    mixup_alpha: float = 0.0


RECIPES: dict[str, Recipe] = {
    "none": Recipe(),
    "cifar": Recipe(pad_crop=True, flip=True),
    "inception": Recipe(resized_crop=True, flip=True),
}
RECIPES.update({n: Recipe(resized_crop=True, flip=True, randaug=a.randaug, mixup_alpha=a.mixup)
                for n, a in augreg.SETTINGS.items()})
RECIPES["augreg"] = RECIPES[augreg.DEFAULT]  # the model's own setting: augreg.resolve (tasks/train.py)
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # torchvision RandomResizedCrop defaults


def recipe_name(value: object) -> str:
    """data.augment -> a recipe name; true/false keep their old meaning (cifar / none)."""
    if value is True:
        return "cifar"
    if value is False or value is None:
        return "none"
    if isinstance(value, str) and value in RECIPES:
        return value
    raise unknown_name("data.augment", str(value), list(RECIPES), "true = cifar, false = none.")


def centre_crop(x: torch.Tensor, crop_pct: float | None) -> torch.Tensor:
    """The central crop_pct of each image's side (evaluation: resize-then-centre-crop)."""
    if crop_pct is None or crop_pct >= 1:
        return x
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * crop_pct)), max(1, round(w * crop_pct))
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top:top + ch, left:left + cw]


def pad_crop_flip(x: torch.Tensor, g: torch.Generator, global_n: int, sl: slice) -> torch.Tensor:
    """Pad (reflect, size // 8) and random crop + horizontal flip, vectorised (float images)."""
    dev = x.device
    s = x.shape[-1]
    pad = s // 8
    off = torch.randint(0, 2 * pad + 1, (global_n, 2), generator=g, device=dev)[sl]
    flip = (torch.rand(global_n, generator=g, device=dev) < 0.5)[sl]
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    ar = torch.arange(s, device=dev)
    rows = off[:, :1] + ar  # (B, s)
    cols = off[:, 1:] + ar
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip is reversed columns
    b = torch.arange(len(x), device=dev)[:, None, None]
    return x.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def resized_crop_flip(x: torch.Tensor, size: int, g: torch.Generator, global_n: int, sl: slice,
                      flip: bool = True) -> torch.Tensor:
    """Random resized crop (area CROP_SCALE, log-uniform aspect CROP_RATIO; a box that does
    not fit is clamped to the image instead of re-drawn) + flip, to (size, size), bilinear,
    one grid_sample for the batch."""
    dev = x.device
    u = torch.rand(global_n, 5, generator=g, device=dev)[sl]
    area = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[:, 0]
    logr = math.log(CROP_RATIO[0]) + (math.log(CROP_RATIO[1]) - math.log(CROP_RATIO[0])) * u[:, 1]
    w = (area * logr.exp()).sqrt().clamp(max=1.0)  # box side as a fraction of the image side
    h = (area / logr.exp()).sqrt().clamp(max=1.0)
    cx = (u[:, 2] * (1 - w) + w / 2) * 2 - 1  # box centre in [-1, 1]
    cy = (u[:, 3] * (1 - h) + h / 2) * 2 - 1
    sx = torch.where((u[:, 4] < 0.5) & flip, -w, w)
    theta = torch.zeros(len(x), 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, h, cy
    grid = F.affine_grid(theta, [len(x), x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, num_classes: int,
          g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup with the batch reversed (one lambda per batch ~ Beta(alpha, alpha)); soft targets.
    Under DDP each rank mixes within its own slice."""
    lam = _beta(alpha, g, x.device)
    t = F.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x.flip(0), lam * t + (1 - lam) * t.flip(0)


def _beta(alpha: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """Beta(alpha, alpha) from the seeded generator: X / (X + Y) of two Gamma(alpha) draws."""
    z = torch._standard_gamma(torch.full((2,), alpha, device=device), generator=g)
    return torch.nan_to_num(z[0] / z.sum(), nan=0.5)  # both draws may underflow at small alpha


def crops(value: object) -> bool:
    """Whether data.augment's recipe takes a random resized crop (then folders and shards
    crop the whole image at decode time)."""
    return RECIPES[recipe_name(value)].resized_crop


def apply(name: str, x: torch.Tensor, y: torch.Tensor, *, size: int, g: torch.Generator,
          global_n: int, sl: slice, num_classes: int | None, cropped: bool = False,
          mix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Recipe `name` on a float (B, C, H, W) batch in [0, 255] units (native size for a
    resized crop, else already `size`) -> (images at `size`, labels or soft targets).
    cropped: the decoder already took the crop and flip; mix=False leaves out mixup (preview)."""
    r = RECIPES[name]
    if r.resized_crop and not cropped:
        x = resized_crop_flip(x, size, g, global_n, sl, flip=r.flip)
    elif r.pad_crop:
        x = pad_crop_flip(x, g, global_n, sl)
    if r.randaug is not None:
        x = augreg.randaugment(x, *r.randaug, g, global_n, sl)
    if r.mixup_alpha and mix:
        assert num_classes, "mixup needs the number of classes"
        x, y = mixup(x, y, r.mixup_alpha, num_classes, g)
    return x, y
