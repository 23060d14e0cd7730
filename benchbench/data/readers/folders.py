"""ImageFolder trees (`data=imagefolder`): class folders of image files, indexed once into a
cached manifest, decoded (shorter side resized, centre crop) when they fit or per batch when
streamed."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchbench.data.base import DATASETS, DatasetSpec, Split
from benchbench.data.decode import BAD_IMAGE, decode_bytes, decode_eval
from benchbench.data.manifest import SampleTable, cached, fingerprint, pack_names
from benchbench.errors import DataError
from benchbench.registry import cfg_get as _get
from benchbench.runtime import available_cpus  # noqa: F401 - also imported from here

# ImageFolder (ImageNet layout): root/train/<class>/*.jpg and root/val/<class>/ (or test/).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision / timm IMAGENET_DEFAULT_MEAN, for streamed sets
IMAGENET_STD = (0.229, 0.224, 0.225)
_BAD_IMAGE = BAD_IMAGE  # what the decoders raise on broken files


def _scan(d: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Relative paths (`<class>/<file>`) and labels of one split, one scandir per class."""
    names, labels = [], []
    for ci, c in enumerate(classes):
        if not (d / c).is_dir():
            continue  # a val/ tree may lack a class
        files = sorted(e.name for e in os.scandir(d / c) if os.path.splitext(e.name)[1].lower() in IMG_EXTENSIONS)
        if not files:
            raise DataError(f"class folder {d / c} holds no images ({', '.join(IMG_EXTENSIONS)}): "
                            f"add images or remove the folder.")
        names += [f"{c}/{f}" for f in files]
        labels += [ci] * len(files)
    return names, labels


def _stamp(dirs: list[Path]) -> str:
    """mtimes of the split folders and their class folders: adding, removing or renaming a
    file changes its folder's mtime, so the manifest is rebuilt."""
    parts = []
    for d in dirs:
        parts.append(f"{d.name}:{d.stat().st_mtime_ns}")
        parts += sorted(f"{d.name}/{e.name}:{e.stat().st_mtime_ns}" for e in os.scandir(d) if e.is_dir())
    return fingerprint("\n".join(parts))


def _layout(root: Any) -> tuple[Path, Path]:
    fix = "set data.root=DIR holding train/ and val/ (or test/) folders of class folders"
    if root is None:
        raise DataError(f"imagefolder: data.root must be set: {fix}.")
    if not Path(root).is_dir():
        raise DataError(f"imagefolder: data.root={root} is not a folder: {fix}.")
    root = Path(root)
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DataError(f"imagefolder: {root} lacks train/ or val/ (test/): {fix}.")
    return root, test_dir


def folder_manifest(root: Any) -> dict[str, Any]:
    """The cached index of a class-folder tree (see data.manifest): classes, per split the
    packed relative paths and labels, and the path-free `fingerprint`."""
    root, test_dir = _layout(root)

    def build() -> dict[str, Any]:
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"imagefolder: {root / 'train'} has no class folders: set data.root=DIR "
                            f"holding train/ and val/ (or test/) folders of class folders.")
        extra = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name not in classes)
        if extra:
            raise DataError(f"imagefolder: {test_dir} has classes missing from train/: {', '.join(extra[:5])}.")
        out: dict[str, Any] = {"classes": np.array(classes)}
        for part, d in (("train", root / "train"), ("test", test_dir)):
            names, labels = _scan(d, classes)
            out[f"{part}_names"], out[f"{part}_offsets"] = pack_names(names)
            out[f"{part}_labels"] = np.array(labels, dtype=np.int64)
        out["fingerprint"] = np.array(fingerprint(
            "imagefolder", out["classes"], *(out[f"{p}_{k}"] for p in ("train", "test")
                                             for k in ("names", "offsets", "labels"))))
        return out

    return cached("imagefolder", root, test_dir.name, _stamp([root / "train", test_dir]), build)


def _load_imagefolder(cfg: Any) -> tuple[Split, Split, int]:
    m = folder_manifest(_get(cfg, "root"))
    root, test_dir = _layout(_get(cfg, "root"))
    size = int(_get(cfg, "image_size", 224))
    c = 1 if _get(cfg, "channels") == 1 else 3
    splits = []
    for part, d in (("train", root / "train"), ("test", test_dir)):
        table = SampleTable(str(d), m[f"{part}_names"], m[f"{part}_offsets"])
        splits.append(Split(torch.empty(0, c, size, size, dtype=torch.uint8),
                            torch.from_numpy(m[f"{part}_labels"]), table))
    return splits[0], splits[1], len(m["classes"])


def _fingerprint_imagefolder(cfg: Any) -> str:
    return str(folder_manifest(_get(cfg, "root"))["fingerprint"])


DATASETS.register("imagefolder", DatasetSpec(_load_imagefolder, fingerprint=_fingerprint_imagefolder))


def decode_image(path: str, size: int, channels: int) -> np.ndarray:
    """(C, size, size) uint8: shorter side resized to `size` (bilinear), centre crop."""
    with open(path, "rb") as f:
        return decode_bytes(f.read(), size, channels).numpy()


def read_sample(paths: Any, i: int) -> bytes:
    """The encoded bytes of sample i of a split's paths (a SampleTable, or a list of files)."""
    if hasattr(paths, "read"):
        return paths.read(i)
    with open(paths[i], "rb") as f:
        return f.read()


def _decode_split(split: Split, skip_bad: bool, eval_view: bool = False,
                  crop_pct: float | None = None) -> tuple[Split, list[str]]:
    """Decode a path split into uint8 tensors (threads: the decoders release the GIL);
    eval_view: the evaluation view (shorter side to size / crop_pct, central crop)."""
    c, size = split.x.shape[1], split.x.shape[-1]
    paths = split.paths if split.paths is not None else []

    def one(i: int) -> torch.Tensor | None:
        try:
            raw = read_sample(paths, i)
            return decode_eval(raw, size, c, crop_pct) if eval_view else decode_bytes(raw, size, c)
        except BAD_IMAGE as e:
            if not skip_bad:
                raise DataError(f"unreadable image {paths[i]} ({e}): fix or delete it, or set "
                                f"data.skip_bad_images=true to skip and count such files.") from None
            return None

    with ThreadPoolExecutor(available_cpus()) as pool:
        arrs = list(pool.map(one, range(len(paths))))
    ok = [i for i, a in enumerate(arrs) if a is not None]
    bad = [paths[i] for i, a in enumerate(arrs) if a is None]
    x = torch.stack([arrs[i] for i in ok]) if ok else split.x
    return Split(x, split.y[ok], eval_ready=eval_view), bad


