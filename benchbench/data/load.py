"""load_dataset: a registry entry -> class and size subsets, channel conversion, train statistics."""
from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import torch

from benchbench.data.augment import crops
from benchbench.data.base import DATASETS, DEFAULT_MAX_RESIDENT_BYTES, Dataset, _positive
from benchbench.data.readers.folders import IMAGENET_MEAN, IMAGENET_STD, _decode_split
from benchbench.data.subsets import VAL_SEED, carve_val, nested_subset, val_count
from benchbench.errors import ConfigError, DataError
from benchbench.registry import cfg_get as _get


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
    val = None
    val_split = _get(cfg, "val_split")
    if not spec.generated:
        if k_cfg is not None:
            check_classes(name, k, k_cfg)
            train, test = (s.take((s.y < k_cfg).nonzero().flatten()) for s in (train, test))
            k = k_cfg
        if val_split is not None:  # before nesting: disjoint from, and the same for, every size
            val_idx, rest = carve_val(train.y, val_count(val_split, len(train)))
            train, val = train.take(rest), train.take(val_idx)
        out = {}
        for part, s in (("train", train), ("test", test)):
            n = sizes[part]
            check_size(name, part, n, len(s), k if k_cfg else None)
            # the test subset uses one fixed seed: every subset seed is scored on the same images
            out[part] = s.take(nested_subset(s.y, n, seed if part == "train" else 0)) if n and n < len(s) else s
        train, test = out["train"], out["test"]
    elif val_split is not None:  # an unlimited generator: validation images from their own stream
        val = spec.load({**_plain(cfg), "seed": VAL_SEED,
                         "train_size": val_count(val_split, spec.default_train_size or 0)})[0]

    if train.streamed:
        c, size = train.x.shape[1], train.x.shape[-1]
        if (len(train) + len(test)) * c * size * size <= budget:
            skip = bool(_get(cfg, "skip_bad_images", True))
            crop_pct = _get(cfg, "crop_pct")
            # a random resized crop is drawn from the whole image per step: train stays streamed
            (train, bad_tr) = (train, []) if crops(_get(cfg, "augment", False)) else _decode_split(train, skip)
            (test, bad_te) = _decode_split(test, skip, eval_view=True, crop_pct=crop_pct)
            if val is not None:
                val, bad_va = _decode_split(val, skip, eval_view=True, crop_pct=crop_pct)
                bad_te = bad_te + bad_va
            if bad_tr or bad_te:
                bad = bad_tr + bad_te
                warnings.warn(f"{name}: skipped {len(bad)} unreadable images (first: {bad[0]}); "
                              f"set data.skip_bad_images=false to stop on them instead.", stacklevel=2)
            if not len(train) or not len(test):
                raise DataError(f"{name}: no readable images in the {'train' if not len(train) else 'test'} split.")

    _warn_unseen_classes(name, train.y, test.y, k)
    train = replace(train, x=_to_channels(train.x, channels))
    test = replace(test, x=_to_channels(test.x, channels))
    if val is not None:
        val = replace(val, x=_to_channels(val.x, channels))
    if train.streamed:  # cannot read every image for statistics; use the cited ImageNet ones
        gray = ((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,))  # channel averages
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if train.x.shape[1] == 3 else gray
    else:
        mean, std = channel_stats(train.x)
    return Dataset(name, train, test, k, train.x.shape[1], mean, std, val)


def check_classes(name: str, k: int, k_cfg: int) -> None:
    """data.num_classes must not exceed the classes the dataset has (also benchbench-plan's)."""
    if k_cfg > k:
        raise ConfigError(f"data.num_classes={k_cfg} but {name} has {k} classes; use 1..{k}.")


def check_size(name: str, part: str, n: int | None, have: int, k_kept: int | None) -> None:
    """data.<part>_size must not exceed the images there are (after classes and validation)."""
    if n is not None and n > have:
        raise ConfigError(f"data.{part}_size={n} but {name} has only {have} {part} images"
                          f"{f' in its first {k_kept} classes' if k_kept else ''}; lower data.{part}_size.")


def _warn_unseen_classes(name: str, train_y: torch.Tensor, test_y: torch.Tensor, k: int) -> None:
    """A class with test images but no training image: the model can never predict it, so
    its test images all count as errors (a shard or folder left out of the copy)."""
    n = max([k] + [int(y.max()) + 1 for y in (train_y, test_y) if len(y)])
    have = torch.bincount(train_y, minlength=n) > 0
    unseen = ((torch.bincount(test_y, minlength=n) > 0) & ~have).nonzero().flatten().tolist()
    if unseen:
        shown = ", ".join(map(str, unseen[:5])) + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
        what = f"class{'es' if len(unseen) > 1 else ''} {shown}"
        warnings.warn(f"{name}: the test split has {what}, the training split none: the model "
                      f"never learns {what}, so those test images count as errors (add the "
                      f"training images, or raise data.train_size).", stacklevel=3)


def _plain(cfg: Any) -> dict[str, Any]:
    """A data config (DictConfig or dict) as a plain dict."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)
