"""ImageFolder trees (`data=imagefolder`): class folders of image files, listed as paths and
decoded (shorter side resized, centre crop) when they fit or per batch when streamed."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchbench.data.base import DATASETS, DatasetSpec, Split
from benchbench.errors import DataError
from benchbench.registry import cfg_get as _get

# ImageFolder (ImageNet layout): root/train/<class>/*.jpg and root/val/<class>/ (or test/).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision / timm IMAGENET_DEFAULT_MEAN, for streamed sets
IMAGENET_STD = (0.229, 0.224, 0.225)
_BAD_IMAGE = (OSError, ValueError, SyntaxError, EOFError)  # what PIL raises on broken files


def _folder_files(d: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for ci, c in enumerate(classes):
        if not (d / c).is_dir():
            continue  # a val/ tree may lack a class
        files = sorted(str(p) for p in (d / c).iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
        if not files:
            raise DataError(f"class folder {d / c} holds no images ({', '.join(IMG_EXTENSIONS)}): "
                            f"add images or remove the folder.")
        paths += files
        labels += [ci] * len(files)
    return paths, labels


def _load_imagefolder(cfg: Any) -> tuple[Split, Split, int]:
    root = _get(cfg, "root")
    fix = "set data.root=DIR holding train/ and val/ (or test/) folders of class folders"
    if root is None or not Path(root).is_dir():
        raise DataError(f"imagefolder: data.root={root} is not a folder: {fix}.")
    root = Path(root)
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DataError(f"imagefolder: {root} lacks train/ or val/ (test/): {fix}.")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"imagefolder: {root / 'train'} has no class folders: {fix}.")
    extra = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name not in classes)
    if extra:
        raise DataError(f"imagefolder: {test_dir} has classes missing from train/: {', '.join(extra[:5])}.")
    size = int(_get(cfg, "image_size", 224))
    c = 1 if _get(cfg, "channels") == 1 else 3
    splits = []
    for d in (root / "train", test_dir):
        paths, labels = _folder_files(d, classes)
        splits.append(Split(torch.empty(0, c, size, size, dtype=torch.uint8),
                            torch.tensor(labels, dtype=torch.int64), paths))
    return splits[0], splits[1], len(classes)


DATASETS.register("imagefolder", DatasetSpec(_load_imagefolder))


def decode_image(path: str, size: int, channels: int) -> np.ndarray:
    """(C, size, size) uint8: shorter side resized to `size` (bilinear), centre crop."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.fit(im.convert("L" if channels == 1 else "RGB"), (size, size),
                          Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))


def _decode_split(split: Split, skip_bad: bool) -> tuple[Split, list[str]]:
    """Decode a path split into uint8 tensors (threads: PIL releases the GIL while decoding)."""
    c, size = split.x.shape[1], split.x.shape[-1]

    def one(p: str) -> np.ndarray | None:
        try:
            return decode_image(p, size, c)
        except _BAD_IMAGE as e:
            if not skip_bad:
                raise DataError(f"unreadable image {p} ({e}): fix or delete it, or set "
                                f"data.skip_bad_images=true to skip and count such files.") from None
            return None

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        arrs = list(pool.map(one, split.paths or []))
    ok = [i for i, a in enumerate(arrs) if a is not None]
    bad = [split.paths[i] for i, a in enumerate(arrs) if a is None]
    x = torch.from_numpy(np.stack([arrs[i] for i in ok])) if ok else split.x
    return Split(x, split.y[ok]), bad
