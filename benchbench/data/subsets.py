"""Nested class-balanced subsets: the dataset-size axis (every smaller subset inside the larger)."""
from __future__ import annotations

import torch

from benchbench.data.base import _seed
from benchbench.errors import ConfigError


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


VAL_SEED = 0x7A1  # one fixed draw: the validation images are the same for every data.seed and size


def val_count(val_split: object, n: int) -> int:
    """data.val_split as a number of images out of n: a whole count (>= 1) or a fraction in (0, 1)."""
    ok = isinstance(val_split, int | float) and not isinstance(val_split, bool)
    if ok and isinstance(val_split, float) and not val_split.is_integer():
        if 0 < val_split < 1:
            return max(1, round(val_split * n))
        ok = False
    if not ok or not 1 <= val_split < n:
        raise ConfigError(f"data.val_split must be a count in 1..{n - 1} or a fraction in (0, 1) "
                          f"of the {n} training images, got {val_split!r}.")
    return int(val_split)


def carve_val(y: torch.Tensor, n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation indices, remaining indices), both sorted: n_val images, class-balanced
    (equal per class; the remainder goes one each to classes in a seeded order), drawn with
    one fixed seed before any training subset is taken, so the validation split is disjoint
    from every nested training subset and the same for every train size (the paper's minival)."""
    y = torch.as_tensor(y)
    g = torch.Generator().manual_seed(VAL_SEED)
    classes, inverse = torch.unique(y, return_inverse=True)
    k = len(classes)
    per = torch.full((k,), n_val // k, dtype=torch.int64)
    per[torch.randperm(k, generator=g)[: n_val % k]] += 1
    take = []
    for ci in range(k):
        idx = (inverse == ci).nonzero().flatten()
        if per[ci] >= len(idx):
            raise ConfigError(f"data.val_split={n_val} takes {int(per[ci])} images of class "
                              f"{int(classes[ci])}, which has only {len(idx)}; lower data.val_split.")
        take.append(idx[torch.randperm(len(idx), generator=g)[: int(per[ci])]])
    val = torch.cat(take).sort().values
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[val] = False
    return val, keep.nonzero().flatten()
