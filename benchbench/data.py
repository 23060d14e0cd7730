"""Datasets -> uint8 tensors at native resolution; nested class-balanced subsets; loaders.

Registry keyed by the name users type (`data=fashion_mnist`, files in conf/data/). Nothing is
ever downloaded: a missing dataset is a DataError that names what to install or set.
Small sets live on the training device as uint8 (DeviceLoader); ImageFolder trees larger than
`data.max_resident_bytes` stream through DataLoader workers (StreamLoader). Both yield the
same batches for the same (seed, step), so a resumed run sees what it would have seen.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchbench.errors import ConfigError, DataError
from benchbench.registry import Registry
from benchbench.registry import cfg_get as _get

DEFAULT_MAX_RESIDENT_BYTES = 2 << 30  # 2 GiB of uint8 images per loader on the device


@dataclass
class Split:
    """Images and labels of one split. `x` is uint8 (N, C, H, W) on the CPU.

    A split of an ImageFolder tree too large to hold decoded carries `paths` instead: then
    `x` is an empty (0, C, S, S) placeholder giving the channels and size it decodes to."""

    x: torch.Tensor  # uint8, (N, C, H, W), native resolution, CPU
    y: torch.Tensor  # int64, (N,)
    paths: list[str] | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def streamed(self) -> bool:
        return self.paths is not None

    def take(self, idx: torch.Tensor) -> Split:
        if self.paths is not None:
            return Split(self.x, self.y[idx], [self.paths[i] for i in idx.tolist()])
        return Split(self.x[idx], self.y[idx])


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    channels: int  # channels of x after data.channels conversion
    mean: tuple[float, ...]  # per channel, [0, 1] units, from the train split (or cited)
    std: tuple[float, ...]


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one registry entry: `load(cfg) -> (train, test, num_classes)`."""

    load: Callable[[Any], tuple[Split, Split, int]]
    default_train_size: int | None = None  # None = all
    default_test_size: int | None = None
    generated: bool = False  # the loader already applied num_classes and the sizes


DATASETS: Registry[DatasetSpec] = Registry("dataset", "Pick one with data=<name> (files in conf/data/).")


def _u64(v: int) -> int:
    return int(v) % (1 << 64)  # SeedSequence wants non-negative entropy


def _seed(*parts: int) -> int:
    """A 63-bit torch seed mixed from integers, so (seed, step) pairs never collide by sum."""
    state = np.random.SeedSequence([_u64(p) for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1])) & ((1 << 63) - 1)


def _positive(name: str, v: Any) -> int | None:
    if v is None:
        return None
    whole = isinstance(v, int) or (isinstance(v, float) and v.is_integer())  # not "abc", nan, inf
    if isinstance(v, bool) or not whole or int(v) <= 0:
        raise ConfigError(f"data.{name} must be a positive integer or null, got {v!r}.")
    return int(v)


# Embedded procedural dataset. Class = shape (disc, square, triangle, ring, cross) x the
# orientation of the stripes inside it (horizontal, vertical); everything else is nuisance.
SYN_SIZE, SYN_CLASSES, SYN_CHUNK = 32, 10, 1024
SYN_DEFAULT_TRAIN, SYN_DEFAULT_TEST = 10_000, 2_000
SYN_SHAPES = ("disc", "square", "triangle", "ring", "cross")
SYN_VERSION = 1  # part of every chunk's seed: bump it when the generator changes
_SPLIT_IDS = {"train": 0, "test": 1}


def _sdf(kind: np.ndarray, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance-like field (negative inside) of shape `kind` with radius r, in image units."""
    u, v, r = np.broadcast_arrays(u, v, r)
    d = np.empty(u.shape, np.float32)
    for k in range(len(SYN_SHAPES)):
        sel = kind == k
        if not sel.any():
            continue
        a, b, rr = u[sel], v[sel], r[sel]
        if k == 0:  # disc
            d[sel] = np.hypot(a, b) - rr
        elif k == 1:  # square of the same area as the disc (side = r * sqrt(pi))
            d[sel] = np.maximum(np.abs(a), np.abs(b)) - rr * 0.886
        elif k == 2:  # equilateral triangle, circumradius 1.25 r
            d[sel] = np.maximum.reduce([b, 0.866 * a - 0.5 * b, -0.866 * a - 0.5 * b]) - rr * 0.625
        elif k == 3:  # ring, wide enough to hold two stripe periods
            d[sel] = np.abs(np.hypot(a, b) - rr * 0.75) - rr * 0.3
        else:  # plus-shaped cross
            w = rr * 0.36
            d[sel] = np.minimum(np.maximum(np.abs(a) - w, np.abs(b) - rr),
                                np.maximum(np.abs(b) - w, np.abs(a) - rr))
    return d


def _synthetic_chunk(seed: int, split: str, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """SYN_CHUNK images, a function of (seed, split, chunk) only: the first N images of a
    split are the same for every N, and train and test come from disjoint seed streams."""
    rng = np.random.default_rng([SYN_VERSION, _u64(seed), _SPLIT_IDS[split], chunk])
    n, s = SYN_CHUNK, SYN_SIZE
    y = (chunk * n + np.arange(n)) % SYN_CLASSES  # label = global index mod 10: balanced prefixes
    kind, orient = y // 2, y % 2
    g = (np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1  # pixel centres in [-1, 1]
    yy, xx = g[None, :, None], g[None, None, :]
    px = 2.0 / s  # one pixel in image units: edges are anti-aliased over one pixel

    def u(lo: float, hi: float, shape: tuple[int, ...] = (n, 1, 1)) -> np.ndarray:
        return rng.uniform(lo, hi, shape).astype(np.float32)

    # low-frequency background: a base colour plus two random plane waves per channel;
    # sin(fx x + fy y + ph) = sin(fx x + ph) cos(fy y) + cos(fx x + ph) sin(fy y): no full-size sin
    img = np.broadcast_to(u(0.15, 0.85, (n, 3, 1, 1)), (n, 3, s, s)).copy()
    for _ in range(2):
        amp, ph = u(0.0, 0.15, (n, 3, 1, 1)), u(0, 2 * np.pi, (n, 3, 1, 1))
        ax, by = u(-2.5, 2.5, (n, 3, 1, 1)) * xx[:, None] + ph, u(-2.5, 2.5, (n, 3, 1, 1)) * yy[:, None]
        img += amp * np.sin(ax) * np.cos(by) + amp * np.cos(ax) * np.sin(by)

    # distractor: a smaller plain shape of any kind, anywhere, behind the object
    dist = _sdf(rng.integers(0, 5, n), xx - u(-0.8, 0.8), yy - u(-0.8, 0.8), u(0.12, 0.22))
    alpha = np.clip(0.5 - dist / px, 0, 1)[:, None]
    img += (u(0, 1, (n, 3, 1, 1)) - img) * alpha

    # the object: random radius, position (mostly inside the frame) and a small rotation
    r = u(0.5, 0.7)
    cx, cy = u(-1, 1) * (1 - r), u(-1, 1) * (1 - r)
    th = u(-0.15, 0.15)
    a, b = xx - cx, yy - cy
    cu, cv = np.cos(th) * a + np.sin(th) * b, -np.sin(th) * a + np.cos(th) * b
    alpha = np.clip(0.5 - _sdf(kind, cu, cv, r) / px, 0, 1)[:, None]

    # stripes in the image frame: period 3.5..6.5 px, random phase, +-14 degrees of jitter
    ang = orient.astype(np.float32)[:, None, None] * np.float32(np.pi / 2) + u(-0.25, 0.25)
    k = np.float32(2 * np.pi) / (u(3.5, 6.5) * px)  # radians per image unit
    ay, bx = k * np.cos(ang) * yy + u(0, 2 * np.pi), k * np.sin(ang) * xx
    stripe = 0.5 + 0.5 * (np.sin(ay) * np.cos(bx) + np.cos(ay) * np.sin(bx))
    c1 = u(0, 1, (n, 3, 1, 1))
    d = np.where(rng.random((n, 3, 1, 1)) < 0.5, -1, 1) * u(0.25, 0.6, (n, 3, 1, 1))
    c2 = np.clip(np.where((c1 + d < 0) | (c1 + d > 1), c1 - d, c1 + d), 0, 1)  # keep the contrast
    img += (c1 + (c2 - c1) * stripe[:, None] - img) * alpha

    img += rng.standard_normal(img.shape, dtype=np.float32) * u(0.02, 0.08, (n, 1, 1, 1))
    assert img.dtype == np.float32
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), y.astype(np.int64)


def synthetic_split(n: int, *, split: str = "train", seed: int = 0, num_classes: int = SYN_CLASSES) -> Split:
    """The first n images of the procedural split whose label is < num_classes."""
    per_10 = math.ceil(n / num_classes) * SYN_CLASSES  # labels cycle 0..9, so this many suffice
    xs, ys = [], []
    for c in range(math.ceil(per_10 / SYN_CHUNK)):
        x, y = _synthetic_chunk(seed, split, c)
        keep = y < num_classes
        xs.append(x[keep])
        ys.append(y[keep])
    return Split(torch.from_numpy(np.concatenate(xs)[:n]), torch.from_numpy(np.concatenate(ys)[:n]))


def _load_synthetic(cfg: Any) -> tuple[Split, Split, int]:
    k = _positive("num_classes", _get(cfg, "num_classes")) or SYN_CLASSES
    if k > SYN_CLASSES:
        raise ConfigError(f"data.num_classes={k} but synthetic has {SYN_CLASSES} classes; use 1..10.")
    n_train = _positive("train_size", _get(cfg, "train_size")) or SYN_DEFAULT_TRAIN
    n_test = _positive("test_size", _get(cfg, "test_size")) or SYN_DEFAULT_TEST
    # the training draw follows data.seed (a different sample of an unlimited pool, like a
    # different subset); the test set is the same for every seed
    seed = int(_get(cfg, "seed", 0))
    return (synthetic_split(n_train, split="train", seed=seed, num_classes=k),
            synthetic_split(n_test, split="test", seed=0, num_classes=k), k)


DATASETS.register("synthetic", DatasetSpec(_load_synthetic, SYN_DEFAULT_TRAIN, SYN_DEFAULT_TEST, generated=True))


# Fashion-MNIST: Xiao et al. 2017, same idx format as LeCun's MNIST (magic 0x803 / 0x801).
FASHION_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
IDX_IMAGES, IDX_LABELS = 2051, 2049
_FASHION_FIX = ("install the Debian package (apt-get install dataset-fashion-mnist) or set "
                "data.root=DIR holding train-images-idx3-ubyte[.gz] and the three other idx files")


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """A uint8 idx file (raw or gzip): magic, big-endian dims, then the bytes; all checked."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e}); the file is truncated or corrupt: "
                        f"re-install it ({_FASHION_FIX}).") from None
    ndim = magic & 0xFF
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{path}: truncated idx header ({len(raw)} bytes); re-install the file.")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(f"{path}: idx magic number {got}, expected {magic} "
                        f"({'images' if magic == IDX_IMAGES else 'labels'}); wrong or corrupt file.")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    need = math.prod(dims)
    if len(raw) - head != need:
        raise DataError(f"{path}: {len(raw) - head} data bytes but the header {dims} says {need}: "
                        f"the file is truncated or corrupt; re-install it.")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    for p in (root / f"{stem}.gz", root / stem):
        if p.is_file():
            return p
    raise DataError(f"Fashion-MNIST: no {stem}[.gz] in {root}: {_FASHION_FIX}.")


def _idx_split(root: Path, prefix: str, classes: int) -> Split:
    ip = _idx_file(root, f"{prefix}-images-idx3-ubyte")
    lp = _idx_file(root, f"{prefix}-labels-idx1-ubyte")
    x, y = read_idx(ip, IDX_IMAGES), read_idx(lp, IDX_LABELS)
    if len(x) != len(y):
        raise DataError(f"{ip} has {len(x)} images but {lp} has {len(y)} labels; re-install them.")
    if y.size and int(y.max()) >= classes:
        raise DataError(f"{lp}: label {int(y.max())} outside 0..{classes - 1}; wrong or corrupt file.")
    return Split(torch.from_numpy(x.copy())[:, None], torch.from_numpy(y.astype(np.int64)))


def _load_fashion(cfg: Any) -> tuple[Split, Split, int]:
    root = Path(_get(cfg, "root", FASHION_ROOT))
    if not root.is_dir():
        raise DataError(f"Fashion-MNIST folder {root} does not exist: {_FASHION_FIX}.")
    return _idx_split(root, "train", 10), _idx_split(root, "t10k", 10), 10


DATASETS.register("fashion_mnist", DatasetSpec(_load_fashion))


def _load_digits(cfg: Any) -> tuple[Split, Split, int]:
    from sklearn.datasets import load_digits  # ships with scikit-learn (1797 images, 8x8)

    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255 / 16)).astype(np.uint8))[:, None]  # 0..16 -> 0..255
    y = torch.from_numpy(d.target.astype(np.int64))
    # fixed stratified 80/20 split: every 5th image of each class, in file order, is test
    rank = torch.zeros_like(y)
    for c in range(10):
        idx = (y == c).nonzero().flatten()
        rank[idx] = torch.arange(len(idx))
    test = rank % 5 == 4
    return Split(x[~test], y[~test]), Split(x[test], y[test]), 10


DATASETS.register("digits", DatasetSpec(_load_digits))


# CIFAR in torchvision's on-disk python format (Krizhevsky 2009): pickled dicts of uint8 rows.
class _NumpyOnly(pickle.Unpickler):
    """Only numpy arrays and plain containers: a CIFAR batch needs nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path, fix: str) -> dict:
    if not path.is_file():
        raise DataError(f"missing {path}: {fix}.")
    try:
        # from memory: a corrupt length field then reads what is there, never allocates it
        d = _NumpyOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - a malformed pickle raises almost any type
        raise DataError(f"{path}: not a CIFAR batch ({type(e).__name__}: {e}); replace the file.") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: not a CIFAR batch (a {type(d).__name__}, not a dict); replace the file.")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_batch(path: Path, label_key: str, classes: int, fix: str) -> Split:
    d = _unpickle(path, fix)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: a CIFAR batch needs keys 'data' and '{label_key}', found "
                        f"{sorted(map(str, d))}; replace the file.")
    try:
        x, y = np.asarray(d["data"]), np.asarray(d[label_key])
    except (ValueError, TypeError) as e:  # ragged lists and the like
        raise DataError(f"{path}: 'data' or '{label_key}' is not an array ({e}); replace the file.") from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' is {x.dtype} {x.shape}, expected uint8 (N, 3072); replace the file.")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() >= classes)):
        raise DataError(f"{path}: '{label_key}' must be {len(x)} integers in 0..{classes - 1}; replace the file.")
    return Split(torch.from_numpy(x.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(y.astype(np.int64)))


def _cifar_dir(cfg: Any, sub: str) -> tuple[Path, str]:
    root = _get(cfg, "root")
    fix = f"put torchvision's {sub} under data.root=PATH (nothing is downloaded)"
    if root is None:
        raise DataError(f"{_get(cfg, 'name')} needs data.root: {fix}.")
    root = Path(root)
    d = root if root.name == sub else root / sub
    if not d.is_dir():
        raise DataError(f"no {sub} folder under {root}: {fix}.")
    return d, fix


def _load_cifar10(cfg: Any) -> tuple[Split, Split, int]:
    d, fix = _cifar_dir(cfg, "cifar-10-batches-py")
    parts = [_cifar_batch(d / f"data_batch_{i}", "labels", 10, fix) for i in range(1, 6)]
    train = Split(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))
    return train, _cifar_batch(d / "test_batch", "labels", 10, fix), 10


def _load_cifar100(cfg: Any) -> tuple[Split, Split, int]:
    d, fix = _cifar_dir(cfg, "cifar-100-python")
    return (_cifar_batch(d / "train", "fine_labels", 100, fix),
            _cifar_batch(d / "test", "fine_labels", 100, fix), 100)


DATASETS.register("cifar10", DatasetSpec(_load_cifar10))
DATASETS.register("cifar100", DatasetSpec(_load_cifar100))


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


def nested_subset(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of a class-balanced subset of size n.

    For one seed, the subset of size n lies inside the subset of every size m > n (the
    paper's nested JFT subsets): each class gets a seeded order, the classes are interleaved
    round-robin (in a seeded class order) into one fixed global ranking, and the first n are
    taken. A class that runs out simply drops out of later rounds (imbalanced classes)."""
    y = torch.as_tensor(y)
    if not 0 < n <= len(y):
        raise ConfigError(f"a subset of {n} images cannot be drawn from {len(y)}; use 1..{len(y)}.")
    g = torch.Generator().manual_seed(_seed(seed, 0x5B5E7))
    classes, inverse = torch.unique(y, return_inverse=True)
    rank = torch.empty(len(y), dtype=torch.int64)
    for ci in range(len(classes)):
        idx = (inverse == ci).nonzero().flatten()
        rank[idx[torch.randperm(len(idx), generator=g)]] = torch.arange(len(idx))
    class_pos = torch.randperm(len(classes), generator=g)
    order = torch.argsort(rank * len(classes) + class_pos[inverse])
    return order[:n].sort().values


def _to_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    if channels is None or channels == x.shape[1]:
        return x
    if channels == 3 and x.shape[1] == 1:
        return x.repeat(1, 3, 1, 1)
    if channels == 1 and x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R BT.601 luma, as PIL's "L"
        out = torch.empty(len(x), 1, *x.shape[2:], dtype=torch.uint8)
        for i in range(0, len(x), 8192):  # chunks: a float copy of CIFAR would be 600 MB
            out[i : i + 8192] = (x[i : i + 8192].float() * w).sum(1, keepdim=True).round().clamp(0, 255)
        return out
    raise ConfigError(f"data.channels={channels} cannot be made from {x.shape[1]} channels; use 1, 3 or null.")


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units (float64 sums, in chunks)."""
    c = x.shape[1]
    s, ss, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for i in range(0, len(x), 1024):
        xb = x[i : i + 1024].to(torch.float64).transpose(0, 1).reshape(c, -1) / 255
        s += xb.sum(1)
        ss += (xb * xb).sum(1)
        n += xb.shape[1]
    mean = s / max(n, 1)
    std = (ss / max(n, 1) - mean**2).clamp_min(0).sqrt().clamp_min(1e-3)  # constant images: no /0
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def load_dataset(cfg: Any) -> Dataset:
    """Load `cfg.name`, keep the first num_classes classes, take the nested class-balanced
    subsets of train_size / test_size, convert channels, and compute the train statistics."""
    name = str(_get(cfg, "name", "synthetic"))
    spec = DATASETS.get(name)
    channels = _get(cfg, "channels")
    if channels not in (None, 1, 3):
        raise ConfigError(f"data.channels must be null, 1 or 3, got {channels!r}.")
    k_cfg = _positive("num_classes", _get(cfg, "num_classes"))
    sizes = {"train": _positive("train_size", _get(cfg, "train_size")) or spec.default_train_size,
             "test": _positive("test_size", _get(cfg, "test_size")) or spec.default_test_size}
    _positive("image_size", _get(cfg, "image_size"))
    budget = _positive("max_resident_bytes", _get(cfg, "max_resident_bytes")) or DEFAULT_MAX_RESIDENT_BYTES
    seed = int(_get(cfg, "seed", 0))

    train, test, k = spec.load(cfg)
    if not spec.generated:
        if k_cfg is not None:
            if k_cfg > k:
                raise ConfigError(f"data.num_classes={k_cfg} but {name} has {k} classes; use 1..{k}.")
            train, test = (s.take((s.y < k_cfg).nonzero().flatten()) for s in (train, test))
            k = k_cfg
        out = {}
        for part, s in (("train", train), ("test", test)):
            n = sizes[part]
            if n is not None and n > len(s):
                raise ConfigError(f"data.{part}_size={n} but {name} has only {len(s)} {part} images"
                                  f"{f' in its first {k} classes' if k_cfg else ''}; lower data.{part}_size.")
            # the test subset uses one fixed seed: every subset seed is scored on the same images
            out[part] = s.take(nested_subset(s.y, n, seed if part == "train" else 0)) if n and n < len(s) else s
        train, test = out["train"], out["test"]

    if train.streamed:
        c, size = train.x.shape[1], train.x.shape[-1]
        if (len(train) + len(test)) * c * size * size <= budget:
            skip = bool(_get(cfg, "skip_bad_images", True))
            (train, bad_tr), (test, bad_te) = _decode_split(train, skip), _decode_split(test, skip)
            if bad_tr or bad_te:
                bad = bad_tr + bad_te
                warnings.warn(f"{name}: skipped {len(bad)} unreadable images (first: {bad[0]}); "
                              f"set data.skip_bad_images=false to stop on them instead.", stacklevel=2)
            if not len(train) or not len(test):
                raise DataError(f"{name}: no readable images in the {'train' if not len(train) else 'test'} split.")

    train = replace(train, x=_to_channels(train.x, channels))
    test = replace(test, x=_to_channels(test.x, channels))
    if train.streamed:  # cannot read every image for statistics; use the cited ImageNet ones
        gray = ((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,))  # channel averages
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if train.x.shape[1] == 3 else gray
    else:
        mean, std = channel_stats(train.x)
    return Dataset(name, train, test, k, train.x.shape[1], mean, std)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float (B, C, H, W) -> (B, C, size, size), bilinear with antialiasing when shrinking."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class _Batches:
    """Shared by both loaders: which indices form global step k, and the per-batch transform
    (resize, pad-and-crop + flip, normalise) done on the device."""

    def __init__(self, n: int, *, batch_size: int, image_size: int, mean: Sequence[float],
                 std: Sequence[float], channels: int, device: torch.device | str, augment: bool,
                 seed: int, rank: int, world_size: int, drop_last: bool):
        if batch_size <= 0 or image_size <= 0:
            raise ConfigError(f"batch_size ({batch_size}) and image_size ({image_size}) must be positive.")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in 0..{world_size - 1} (world_size={world_size}).")
        if batch_size % world_size:
            raise ConfigError(f"batch_size={batch_size} must divide by world_size={world_size} "
                              f"(each rank takes an equal slice of the global batch).")
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(f"mean/std have {len(mean)}/{len(std)} entries for {channels}-channel images.")
        self.n, self.batch_size, self.image_size = int(n), int(batch_size), int(image_size)
        self.device = torch.device(device)
        self.augment, self.seed = bool(augment), int(seed)
        self.rank, self.world_size, self.drop_last = int(rank), int(world_size), bool(drop_last)
        self.steps_per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._scale = (1 / (255 * std_t)).to(self.device)  # (x/255 - mean)/std = x*scale - shift
        self._shift = (mean_t / std_t).to(self.device)

    def _check_steps(self) -> None:
        if self.steps_per_epoch == 0:
            raise ConfigError(f"batch_size={self.batch_size} is larger than the {self.n} images "
                              f"with drop_last=True; lower the batch size.")

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_seed(self.seed, 0, epoch))
        return torch.randperm(self.n, generator=g)

    def _steps(self, step: int, device: torch.device) -> Iterator[tuple[int, torch.Tensor, slice]]:
        """(step, the global batch's indices on `device`, this rank's slice) from `step` on."""
        self._check_steps()
        epoch, perm = -1, torch.empty(0, dtype=torch.int64)
        while True:
            e, i = divmod(step, self.steps_per_epoch)
            if e != epoch:  # one host-to-device copy per epoch, none per step
                epoch, perm = e, self._perm(e).to(device)
            idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
            lo, hi = _rank_slice(len(idx), self.rank, self.world_size)
            yield step, idx, slice(lo, hi)
            step += 1

    def _eval_chunks(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        if batch_size <= 0:
            raise ConfigError(f"eval batch_size must be positive, got {batch_size}.")
        return torch.arange(self.rank, self.n, self.world_size, device=device).split(batch_size)

    def _transform(self, xb: torch.Tensor, step: int | None = None, global_n: int = 0,
                   sl: slice = slice(None)) -> torch.Tensor:
        """uint8 batch on the device -> normalised float32 (B, C, image_size, image_size).

        Augmentation draws its randomness for the whole global batch from (seed, step) and
        keeps this rank's slice, so DDP ranks together see exactly the single-process batch."""
        x = _resize(xb.float(), self.image_size)
        if self.augment and step is not None:
            x = self._augment(x, step, global_n, sl)
        return x * self._scale - self._shift

    def _augment(self, x: torch.Tensor, step: int, global_n: int, sl: slice) -> torch.Tensor:
        """Pad (reflect, image_size // 8) and random crop + horizontal flip, vectorised."""
        dev = x.device  # drawn where the batch lives: no host-device copy or sync per step
        g = torch.Generator(device=dev).manual_seed(_seed(self.seed, 1, step))
        s, pad = self.image_size, self.image_size // 8
        off = torch.randint(0, 2 * pad + 1, (global_n, 2), generator=g, device=dev)[sl]
        flip = (torch.rand(global_n, generator=g, device=dev) < 0.5)[sl]
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        ar = torch.arange(s, device=x.device)
        rows = off[:, :1] + ar  # (B, s)
        cols = off[:, 1:] + ar
        cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip is reversed columns
        b = torch.arange(len(x), device=x.device)[:, None, None]
        return x.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def _rank_slice(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous slice of a global batch of n for `rank` (equal when n divides)."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class DeviceLoader(_Batches):
    """Small datasets held on the training device as uint8; augmentation, resize and
    normalization done on the device per batch, so the loader never starves a GPU."""

    def __init__(self, split: Split, *, batch_size: int, image_size: int, mean: Sequence[float],
                 std: Sequence[float], device: torch.device | str = "cpu", augment: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = True,
                 max_resident_bytes: int = DEFAULT_MAX_RESIDENT_BYTES):
        if split.streamed:
            raise ConfigError("this ImageFolder split is larger than data.max_resident_bytes and is "
                              "streamed: build its loader with data.make_loader(...).")
        n, c = split.x.shape[:2]
        super().__init__(n, batch_size=batch_size, image_size=image_size, mean=mean, std=std,
                         channels=c, device=device, augment=augment, seed=seed, rank=rank,
                         world_size=world_size, drop_last=drop_last)
        x = split.x
        # resize once if the resized set fits (per batch otherwise: e.g. 28 px -> 224 px)
        self.pre_resized = x.shape[-2:] != (image_size, image_size) and n * c * image_size**2 <= max_resident_bytes
        if self.pre_resized:
            out = torch.empty(n, c, image_size, image_size, dtype=torch.uint8, device=self.device)
            for i in range(0, n, 2048):
                xb = _resize(x[i : i + 2048].to(self.device).float(), image_size)
                out[i : i + 2048] = xb.round().clamp(0, 255).to(torch.uint8)
            x = out
        self.x = x.to(self.device)
        self.y = split.y.to(self.device)

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Infinite (x, y) batches from global step `step` on (this rank's slice)."""
        for k, idx, sl in self._steps(step, self.device):
            j = idx[sl]
            yield self._transform(self.x[j], k, len(idx), sl), self.y[j]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole split in order, no augmentation; this rank's shard rank::world_size."""
        for j in self._eval_chunks(batch_size, self.device):
            yield self._transform(self.x[j]), self.y[j]


class _FolderItems(torch.utils.data.Dataset):
    """Decodes one image per item in a DataLoader worker; an unreadable file is replaced by
    the next readable one (counted and warned) when skip_bad is set."""

    def __init__(self, paths: list[str], labels: torch.Tensor, size: int, channels: int, skip_bad: bool):
        self.paths, self.labels = paths, labels.tolist()
        self.size, self.channels, self.skip_bad = size, channels, skip_bad
        self.bad = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        for t in range(min(len(self.paths), 100)):
            j = (i + t) % len(self.paths)
            try:
                return torch.from_numpy(decode_image(self.paths[j], self.size, self.channels)), self.labels[j]
            except _BAD_IMAGE as e:
                if not self.skip_bad:
                    raise DataError(f"unreadable image {self.paths[j]} ({e}): fix or delete it, or "
                                    f"set data.skip_bad_images=true.") from None
                self.bad += 1
                warnings.warn(f"skipped unreadable image {self.paths[j]} ({self.bad} in this worker)", stacklevel=2)
        raise DataError(f"100 unreadable images in a row from {self.paths[i]}: check the folder.")


class StreamLoader(_Batches):
    """ImageFolder splits too large to hold: DataLoader workers decode and resize to
    image_size; augmentation and normalization run on the device. Same batches as
    DeviceLoader for the same (seed, step)."""

    def __init__(self, split: Split, *, batch_size: int, image_size: int, mean: Sequence[float],
                 std: Sequence[float], device: torch.device | str = "cpu", augment: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = True,
                 num_workers: int | None = None, skip_bad_images: bool = True):
        assert split.paths is not None, "StreamLoader needs a path split (Split.paths)"
        c = split.x.shape[1]
        super().__init__(len(split), batch_size=batch_size, image_size=image_size, mean=mean, std=std,
                         channels=c, device=device, augment=augment, seed=seed, rank=rank,
                         world_size=world_size, drop_last=drop_last)
        self.items = _FolderItems(split.paths, split.y, image_size, c, skip_bad_images)
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else int(num_workers)

    def _loader(self, batches: Any) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.items, batch_sampler=batches, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.num_workers else None,
        )

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Infinite (x, y) batches from global step `step` on (this rank's slice)."""
        meta: list[tuple[int, int, slice]] = []  # filled as the sampler runs ahead of the workers

        def local_indices() -> Iterator[list[int]]:
            for k, idx, sl in self._steps(step, torch.device("cpu")):
                meta.append((k, len(idx), sl))
                yield idx[sl].tolist()

        for xb, yb in self._loader(_Iterable(local_indices)):
            k, global_n, sl = meta.pop(0)
            xb = xb.to(self.device, non_blocking=True)
            yield self._transform(xb, k, global_n, sl), yb.to(self.device, non_blocking=True)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole split in order, no augmentation; this rank's shard rank::world_size."""
        chunks = [j.tolist() for j in self._eval_chunks(batch_size, torch.device("cpu"))]
        for xb, yb in self._loader(chunks):
            yield self._transform(xb.to(self.device, non_blocking=True)), yb.to(self.device)


class _Iterable:
    """Wraps a generator function as a re-iterable object (DataLoader's batch_sampler)."""

    def __init__(self, fn: Callable[[], Iterator[list[int]]]):
        self.fn = fn

    def __iter__(self) -> Iterator[list[int]]:
        return self.fn()


def make_loader(data: Split | Dataset, *, part: str = "train", batch_size: int, image_size: int,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                device: torch.device | str = "cpu", augment: bool = False, seed: int = 0,
                rank: int = 0, world_size: int = 1, drop_last: bool = True,
                max_resident_bytes: int = DEFAULT_MAX_RESIDENT_BYTES, num_workers: int | None = None,
                skip_bad_images: bool = True) -> DeviceLoader | StreamLoader:
    """DeviceLoader for tensor splits, StreamLoader for streamed (path) splits. Given a
    Dataset, `part` picks the split and mean/std default to the dataset's."""
    if isinstance(data, Dataset):
        mean = data.mean if mean is None else mean
        std = data.std if std is None else std
        data = getattr(data, part)
    if mean is None or std is None:
        raise ConfigError("make_loader needs mean and std (or a Dataset that carries them).")
    kw = dict(batch_size=batch_size, image_size=image_size, mean=mean, std=std, device=device,
              augment=augment, seed=seed, rank=rank, world_size=world_size, drop_last=drop_last)
    if data.streamed:
        return StreamLoader(data, num_workers=num_workers, skip_bad_images=skip_bad_images, **kw)
    return DeviceLoader(data, max_resident_bytes=max_resident_bytes, **kw)
