"""scikit-learn's 8x8 digits (`data=digits`) with a fixed stratified 80/20 split."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from benchbench.data.base import DATASETS, DatasetSpec, Split


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
