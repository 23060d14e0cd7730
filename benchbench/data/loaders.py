"""Batches for training and evaluation: DeviceLoader (uint8 on the device), StreamLoader
(DataLoader workers decode paths), the same batches for the same (seed, step); make_loader picks."""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchbench.data import augment as aug
from benchbench.data.base import DEFAULT_MAX_RESIDENT_BYTES, Dataset, Split, _seed
from benchbench.data.decode import BAD_IMAGE, decode_bytes, decode_crop, decode_eval
from benchbench.data.readers.folders import read_sample
from benchbench.errors import ConfigError, DataError
from benchbench.runtime import available_cpus


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float (B, C, H, W) -> (B, C, size, size), bilinear with antialiasing when shrinking."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class _Batches:
    """Shared by both loaders: which indices form global step k, and the per-batch transform
    (resize, pad-and-crop + flip, normalise) done on the device."""

    def __init__(self, n: int, *, batch_size: int, image_size: int, mean: Sequence[float],
                 std: Sequence[float], channels: int, device: torch.device | str, augment: bool | str,
                 seed: int, rank: int, world_size: int, drop_last: bool,
                 crop_pct: float | None = None, num_classes: int | None = None):
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
        self.augment, self.seed = aug.recipe_name(augment), int(seed)  # a recipe of data.augment
        self.crop_pct, self.num_classes = crop_pct, num_classes
        if crop_pct is not None and not 0 < crop_pct <= 1:
            raise ConfigError(f"data.crop_pct must be in (0, 1] or null, got {crop_pct!r}.")
        self.rank, self.world_size, self.drop_last = int(rank), int(world_size), bool(drop_last)
        self.eval_ready = False  # the decoder already took the evaluation crop (crop_pct)
        self.cpu_crop = False  # the decoder already took the training crop and flip
        self.raw = False  # preview: batches before normalisation and mixup, in [0, 255] units
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

    def _transform(self, xb: torch.Tensor) -> torch.Tensor:
        """Evaluation: uint8 batch on the device -> the centre crop_pct (unless decoded so),
        resized, normalised."""
        x = xb if self.eval_ready else aug.centre_crop(xb, self.crop_pct)
        return self._normalise(_resize(x.float(), self.image_size))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.raw else x * self._scale - self._shift

    def _train_batch(self, xb: torch.Tensor, y: torch.Tensor, step: int, global_n: int,
                     sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: uint8 batch on the device -> the augmentation recipe, normalised.

        Augmentation draws its randomness for the whole global batch from (seed, step) and
        keeps this rank's slice, so DDP ranks together see exactly the single-process batch."""
        if self.augment == "none":
            return self._normalise(_resize(xb.float(), self.image_size)), y
        x = xb.float()
        if not aug.RECIPES[self.augment].resized_crop or self.cpu_crop:
            x = _resize(x, self.image_size)
        g = torch.Generator(device=x.device).manual_seed(_seed(self.seed, 1, step))
        x, y = aug.apply(self.augment, x, y, size=self.image_size, g=g, global_n=global_n, sl=sl,
                         num_classes=self.num_classes, cropped=self.cpu_crop, mix=not self.raw)
        return self._normalise(x), y


def _rank_slice(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous slice of a global batch of n for `rank` (equal when n divides)."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class DeviceLoader(_Batches):
    """Small datasets held on the training device as uint8; augmentation, resize and
    normalization done on the device per batch, so the loader never starves a GPU."""

    def __init__(self, split: Split, *, batch_size: int, image_size: int, mean: Sequence[float],
                 std: Sequence[float], device: torch.device | str = "cpu", augment: bool | str = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = True,
                 max_resident_bytes: int = DEFAULT_MAX_RESIDENT_BYTES, crop_pct: float | None = None,
                 num_classes: int | None = None):
        if split.streamed:
            raise ConfigError("this ImageFolder split is larger than data.max_resident_bytes and is "
                              "streamed: build its loader with data.make_loader(...).")
        n, c = split.x.shape[:2]
        super().__init__(n, batch_size=batch_size, image_size=image_size, mean=mean, std=std,
                         channels=c, device=device, augment=augment, seed=seed, rank=rank,
                         world_size=world_size, drop_last=drop_last, crop_pct=crop_pct,
                         num_classes=num_classes)
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
        self.eval_ready = split.eval_ready

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Infinite (x, y) batches from global step `step` on (this rank's slice)."""
        for k, idx, sl in self._steps(step, self.device):
            j = idx[sl]
            yield self._train_batch(self.x[j], self.y[j], k, len(idx), sl)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole split in order, no augmentation; this rank's shard rank::world_size."""
        for j in self._eval_chunks(batch_size, self.device):
            yield self._transform(self.x[j]), self.y[j]


class _FolderItems(torch.utils.data.Dataset):
    """Reads and decodes one image per item in a DataLoader worker (a file, or a member of a
    shard); an unreadable one is replaced by the next readable one (counted and warned)
    when skip_bad is set. An item is an index (shorter side resized, centre square), or
    (index, "eval") for the evaluation view, or (index, "crop", seed) for a training crop
    of the whole image."""

    def __init__(self, paths: Any, labels: torch.Tensor, size: int, channels: int, skip_bad: bool,
                 crop_pct: float | None = None):
        self.paths, self.labels = paths, labels.numpy()  # arrays: forked workers share them
        self.size, self.channels, self.skip_bad, self.crop_pct = size, channels, skip_bad, crop_pct
        self.bad = 0

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, raw: bytes, view: str, seed: int) -> torch.Tensor:
        if view == "crop":
            return decode_crop(raw, self.size, self.channels, seed)
        if view == "eval":
            return decode_eval(raw, self.size, self.channels, self.crop_pct)
        return decode_bytes(raw, self.size, self.channels)

    def __getitem__(self, item: int | tuple) -> tuple[torch.Tensor, int]:
        i, view, seed = (item, "", 0) if isinstance(item, int) else (tuple(item) + (0,))[:3]
        for t in range(min(len(self.paths), 100)):
            j = (i + t) % len(self.paths)
            try:
                return self._decode(read_sample(self.paths, j), view, seed), int(self.labels[j])
            except BAD_IMAGE as e:
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
                 std: Sequence[float], device: torch.device | str = "cpu", augment: bool | str = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = True,
                 num_workers: int | None = None, skip_bad_images: bool = True,
                 crop_pct: float | None = None, num_classes: int | None = None,
                 shuffle_buffer: int = 10_000):
        assert split.paths is not None, "StreamLoader needs a path split (Split.paths)"
        c = split.x.shape[1]
        super().__init__(len(split), batch_size=batch_size, image_size=image_size, mean=mean, std=std,
                         channels=c, device=device, augment=augment, seed=seed, rank=rank,
                         world_size=world_size, drop_last=drop_last, crop_pct=crop_pct,
                         num_classes=num_classes)
        self.items = _FolderItems(split.paths, split.y, image_size, c, skip_bad_images, crop_pct)
        self.eval_ready = True  # eval_batches decode the evaluation view
        self.cpu_crop = aug.RECIPES[self.augment].resized_crop  # from the whole image, in the workers
        if num_workers is not None and (isinstance(num_workers, bool) or int(num_workers) < 0):
            raise ConfigError(f"data.num_workers must be 0 (decode in this process), a positive "
                              f"number or null (the CPUs this process may use), got {num_workers!r}.")
        self.num_workers = available_cpus() if num_workers is None else int(num_workers)
        self.shards = hasattr(split.paths, "shard_order") and split.paths.shards is not None
        self.shuffle_buffer = int(shuffle_buffer)

    def _perm(self, epoch: int) -> torch.Tensor:
        """Shards: the shards in a seeded order per epoch, each read front to back, and a
        shuffle buffer of `shuffle_buffer` samples over that stream (a sample moves at most
        that far); a permutation of the epoch either way, fixed by (seed, epoch)."""
        if not self.shards:
            return super()._perm(epoch)
        shard, offset = self.items.paths.shard_order()
        g = torch.Generator().manual_seed(_seed(self.seed, 2, epoch))
        shard_rank = torch.randperm(int(shard.max()) + 1, generator=g).numpy()
        stream = np.lexsort((offset, shard_rank[shard]))  # the reading order
        jitter = torch.rand(len(stream), generator=g, dtype=torch.float64).numpy() * self.shuffle_buffer
        return torch.from_numpy(stream[np.argsort(np.arange(len(stream)) + jitter, kind="stable")])

    def _loader(self, batches: Any) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.items, batch_sampler=batches, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",  # page-locked: the copy overlaps compute
            prefetch_factor=4 if self.num_workers else None,  # batches in flight per worker
            persistent_workers=False,
        )

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Infinite (x, y) batches from global step `step` on (this rank's slice)."""
        meta: list[tuple[int, int, slice]] = []  # filled as the sampler runs ahead of the workers

        def local_indices() -> Iterator[list]:
            for k, idx, sl in self._steps(step, torch.device("cpu")):
                meta.append((k, len(idx), sl))
                if self.cpu_crop:  # one seed per place in the global batch: any rank split agrees
                    yield [(j, "crop", _seed(self.seed, 3, k, p))
                           for p, j in enumerate(idx.tolist()) if sl.start <= p < sl.stop]
                else:
                    yield idx[sl].tolist()

        for xb, yb in self._loader(_Iterable(local_indices)):
            k, global_n, sl = meta.pop(0)
            xb = xb.to(self.device, non_blocking=True)
            yield self._train_batch(xb, yb.to(self.device, non_blocking=True), k, global_n, sl)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole split in order, no augmentation; this rank's shard rank::world_size."""
        chunks = [[(i, "eval") for i in j.tolist()] for j in self._eval_chunks(batch_size, torch.device("cpu"))]
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
                device: torch.device | str = "cpu", augment: bool | str = False, seed: int = 0,
                rank: int = 0, world_size: int = 1, drop_last: bool = True,
                max_resident_bytes: int = DEFAULT_MAX_RESIDENT_BYTES, num_workers: int | None = None,
                skip_bad_images: bool = True, crop_pct: float | None = None,
                num_classes: int | None = None,
                shuffle_buffer: int = 10_000) -> DeviceLoader | StreamLoader:
    """DeviceLoader for tensor splits, StreamLoader for streamed (path) splits. Given a
    Dataset, `part` picks the split and mean/std default to the dataset's."""
    if isinstance(data, Dataset):
        mean = data.mean if mean is None else mean
        std = data.std if std is None else std
        num_classes = data.num_classes if num_classes is None else num_classes
        if getattr(data, part, None) is None:
            raise ConfigError(f"the dataset has no '{part}' split (validation needs data.val_split).")
        data = getattr(data, part)
    if mean is None or std is None:
        raise ConfigError("make_loader needs mean and std (or a Dataset that carries them).")
    kw = dict(batch_size=batch_size, image_size=image_size, mean=mean, std=std, device=device,
              augment=augment, seed=seed, rank=rank, world_size=world_size, drop_last=drop_last,
              crop_pct=crop_pct, num_classes=num_classes)
    if data.streamed:
        return StreamLoader(data, num_workers=num_workers, skip_bad_images=skip_bad_images,
                            shuffle_buffer=shuffle_buffer, **kw)
    return DeviceLoader(data, max_resident_bytes=max_resident_bytes, **kw)
