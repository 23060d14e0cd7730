"""Fashion-MNIST (`data=fashion_mnist`) from idx files, raw or gzip, every header checked."""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchbench.data.base import DATASETS, DatasetSpec, Split
from benchbench.errors import DataError
from benchbench.registry import cfg_get as _get

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
