"""The dataset types (Split, Dataset, DatasetSpec), the DATASETS registry, and the seed and
size checks every reader and loader shares."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchbench.errors import ConfigError
from benchbench.registry import Registry

DEFAULT_MAX_RESIDENT_BYTES = 2 << 30  # 2 GiB of uint8 images per loader on the device


@dataclass
class Split:
    """Images and labels of one split. `x` is uint8 (N, C, H, W) on the CPU.

    A split of an ImageFolder tree too large to hold decoded carries `paths` instead: then
    `x` is an empty (0, C, S, S) placeholder giving the channels and size it decodes to."""

    x: torch.Tensor  # uint8, (N, C, H, W), native resolution, CPU
    y: torch.Tensor  # int64, (N,)
    paths: Any = None  # a data.manifest.SampleTable (or a list of files)
    eval_ready: bool = False  # x is already the evaluation view (decoded with data.crop_pct)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def streamed(self) -> bool:
        return self.paths is not None

    def take(self, idx: torch.Tensor) -> Split:
        if hasattr(self.paths, "take"):
            return Split(self.x, self.y[idx], self.paths.take(idx.numpy()), self.eval_ready)
        if self.paths is not None:
            return Split(self.x, self.y[idx], [self.paths[i] for i in idx.tolist()], self.eval_ready)
        return Split(self.x[idx], self.y[idx], eval_ready=self.eval_ready)


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    channels: int  # channels of x after data.channels conversion
    mean: tuple[float, ...]  # per channel, [0, 1] units, from the train split (or cited)
    std: tuple[float, ...]
    val: Split | None = None  # data.val_split: carved out of train before any nested subset


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one registry entry: `load(cfg) -> (train, test, num_classes)`."""

    load: Callable[[Any], tuple[Split, Split, int]]
    default_train_size: int | None = None  # None = all
    default_test_size: int | None = None
    generated: bool = False  # the loader already applied num_classes and the sizes
    # cfg -> a content hash, for datasets read from a user's folder (imagefolder, webdataset):
    # the run_id hashes it instead of data.root, so a copy elsewhere is the same dataset
    fingerprint: Callable[[Any], str] | None = None


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
