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
    classes, inverse, counts = _classes(y)
    # one stable sort groups each class's indices in ascending order (what a per-class
    # nonzero() gave): O(N log N) once, not O(N) per class (14.2M x 21,841 classes)
    by_class = torch.sort(_narrow(inverse, len(classes)), stable=True).indices
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    # the same generator draws in the same order as before: every subset is unchanged
    within = torch.cat([torch.randperm(c, generator=g) for c in counts.tolist()])
    rank = torch.empty(len(y), dtype=torch.int64)
    rank[by_class[within + starts]] = torch.arange(len(y)) - starts
    class_pos = torch.randperm(len(classes), generator=g)
    key = rank * len(classes) + class_pos[inverse]  # unique: the order has no ties
    order = torch.sort(_narrow(key, int(counts.max()) * len(classes))).indices
    keep = torch.zeros(len(y), dtype=torch.bool)
    keep[order[:n]] = True
    return keep.nonzero().flatten()  # sorted, without sorting n indices


def _classes(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch.unique(y, return_inverse, return_counts), by counting when labels are small ints."""
    if len(y) and not y.is_floating_point() and int(y.min()) >= 0 and int(y.max()) < 4 * len(y):
        per_label = torch.bincount(y)
        classes = per_label.nonzero().flatten()
        remap = torch.cumsum(per_label > 0, 0) - 1
        return classes, remap[y], per_label[classes]
    return torch.unique(y, return_inverse=True, return_counts=True)


def _narrow(x: torch.Tensor, bound: int) -> torch.Tensor:
    """The smallest int dtype holding values < bound: sorting it is faster."""
    for dt in (torch.int16, torch.int32):
        if bound <= torch.iinfo(dt).max:
            return x.to(dt)
    return x


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
    from every nested training subset and the same for every train size (the paper's minival).
    Vectorised like nested_subset: one sort, no loop over classes (ImageNet-21k's 21,841)."""
    y = torch.as_tensor(y)
    g = torch.Generator().manual_seed(VAL_SEED)
    classes, inverse, counts = _classes(y)
    k = len(classes)
    per = torch.full((k,), n_val // k, dtype=torch.int64)
    per[torch.randperm(k, generator=g)[: n_val % k]] += 1
    short = (per >= counts).nonzero().flatten()
    if len(short):
        ci = int(short[0])
        raise ConfigError(f"data.val_split={n_val} takes {int(per[ci])} images of class "
                          f"{int(classes[ci])}, which has only {int(counts[ci])}; lower "
                          f"data.val_split.")
    # a random key per image, grouped by class: each class's first per[c] images are drawn
    key = inverse.to(torch.float64) + torch.rand(len(y), generator=g, dtype=torch.float64) * 0.5
    order = torch.sort(key).indices
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.empty(len(y), dtype=torch.int64)
    pos[order] = torch.arange(len(y)) - torch.repeat_interleave(starts, counts)
    is_val = pos < per[inverse]
    return is_val.nonzero().flatten(), (~is_val).nonzero().flatten()
