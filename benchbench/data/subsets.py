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
